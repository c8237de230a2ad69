"""CPU thread settings of the in-process backend on a machine it shares with other work.

PyTorch runs each large operator on a team of intra-op threads (by default one per core). On
a dedicated machine that is fastest; when another process keeps some cores busy, every
operator waits for the team's descheduled threads, and by default idle OpenMP threads also
spin and take cycles from the other work. Measured on 2 cores with one CPU-bound co-process,
the transformers backend then ran 10–60× slower, and batching made it slower still
(``docs/benchmarks.md``).

Two settings fix that:

* ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep instead of spinning). OpenMP reads
  it once, when torch loads, so :func:`prefer_passive_openmp` sets it only if torch is not
  imported yet and the environment does not set it.
* Intra-op threads that follow the cores the *other* processes leave free
  (:class:`CpuShare`: the usable cores minus what the rest of the machine used in the last
  half second, from ``/proc/stat``), up to the count that pays off for the model (a small
  model gets one thread on two cores or fewer, and on more the backend times a forward pass
  with one thread and with every core but one, once: for a small model waking a second
  thread for each operator costs more than it saves, and one core is left to the Python side
  of a batch); the backend updates ``torch.set_num_threads`` on its generation thread before
  each batch.

Inter-op threads are left alone: eager generation does not use them (they serve TorchScript
``fork`` and similar), and their count is process-wide and can be set only once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def prefer_passive_openmp() -> bool:
    """Make idle OpenMP threads sleep, if it can still be set (torch not imported yet).

    Returns:
        Whether ``OMP_WAIT_POLICY`` is ``PASSIVE`` for the torch this process will use (an
        explicit setting in the environment is kept as it is).
    """
    if WAIT_POLICY_ENV not in os.environ and "torch" not in sys.modules:
        os.environ[WAIT_POLICY_ENV] = "PASSIVE"
    return os.environ.get(WAIT_POLICY_ENV, "").upper() == "PASSIVE"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _machine_busy_seconds() -> tuple[float, int] | None:
    """CPU seconds the whole machine has been busy, and its CPU count (Linux ``/proc/stat``)."""
    try:
        lines = Path("/proc/stat").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    fields = lines[0].split()
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu"))
    return busy / os.sysconf("SC_CLK_TCK"), max(cpus, 1)


class CpuShare:
    """How many cores this process can use now: the usable cores minus the others' load.

    The others' load is the machine's busy time minus this process's CPU time over the last
    ``window_s`` seconds (on a machine with more CPUs than this process may use, scaled to its
    share). Without ``/proc/stat`` it is taken as zero.

    Args:
        cores: Usable cores (default: the process's CPU affinity).
        window_s: Shortest interval between two measurements.
    """

    def __init__(self, cores: int | None = None, window_s: float = 0.5) -> None:
        self.cores = cores or usable_cores()
        self.window_s = window_s
        self._last = self._sample()
        self._available = float(self.cores)

    @staticmethod
    def _sample() -> tuple[float, float, float, int] | None:
        machine = _machine_busy_seconds()
        if machine is None:
            return None
        return time.monotonic(), machine[0], time.process_time(), machine[1]

    def available(self) -> float:
        """Cores not used by other processes in the last window (at least 0)."""
        if self._last is None:
            return float(self.cores)
        now = time.monotonic()
        if now - self._last[0] < self.window_s:
            return self._available
        sample = self._sample()
        if sample is None:
            return float(self.cores)
        wall = sample[0] - self._last[0]
        others = (sample[1] - self._last[1]) - (sample[2] - self._last[2])
        self._last = sample
        others_cores = max(0.0, others / wall) * min(1.0, self.cores / sample[3])
        self._available = max(0.0, self.cores - others_cores)
        return self._available

    def threads(self, most: int | None = None) -> int:
        """Intra-op threads to use now: the free cores, rounded, between 1 and ``most``."""
        limit = most or self.cores
        return max(1, min(limit, int(self.available() + 0.5)))


__all__ = ["WAIT_POLICY_ENV", "CpuShare", "prefer_passive_openmp", "usable_cores"]

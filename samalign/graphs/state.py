"""The graph state (defined with the nodes in :mod:`samalign.agents.state`)."""

from __future__ import annotations

from samalign.agents.state import JointState, NerState, ParallelJointState, merge_usage

__all__ = ["JointState", "NerState", "ParallelJointState", "merge_usage"]

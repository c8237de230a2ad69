"""Dataset loaders (and, later, metrics and the benchmark runner)."""

from samalign.evaluation.crossner import CrossNERSentence, read_crossner

__all__ = ["CrossNERSentence", "read_crossner"]

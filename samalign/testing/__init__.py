"""Helpers for testing code built on samalign.

* :mod:`samalign.testing.fakes`: scripted chat models for unit tests (no model, no network;
  see ``docs/testing.md``).
* :mod:`samalign.testing.tiny`: a tiny random model directory built offline, for integration
  and smoke tests against real backends (``python -m samalign.testing build-tiny DIR``).
"""

"""The errors a run reports to its user: the CLIs map them to exit codes (2: cannot start or go on; 1: diverged)."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot start or go on; the message is for the user."""


class TrainingDiverged(TrainingError):
    pass

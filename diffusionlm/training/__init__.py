"""The training loop and what it needs: optimizers, checkpoints, precision, run directories."""

from diffusionlm.training.trainer import Trainer, TrainingDiverged, TrainingError, TrainResult

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "TrainingError"]

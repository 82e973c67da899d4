"""The training loop and what it needs: optimizers, checkpoints, precision, run directories."""

from diffusionlm.training.errors import TrainingDiverged, TrainingError
from diffusionlm.training.trainer import Trainer, TrainResult

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "TrainingError"]

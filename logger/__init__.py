"""Run logging: console JSON lines, Weights & Biases, or nothing; every run also writes metrics.jsonl.

Light at import: wandb and rich are imported only by the backends that use them.
"""

from logger.base import Logger
from logger.console import ConsoleLogger, NoopLogger
from logger.factory import METRICS_FILE, build_logger
from logger.jsonl import JsonlFileLogger
from logger.progress import make_progress
from logger.redact import redact, redact_text
from logger.wandb_logger import WandbLogger

__all__ = [
    "METRICS_FILE",
    "ConsoleLogger",
    "JsonlFileLogger",
    "Logger",
    "NoopLogger",
    "WandbLogger",
    "build_logger",
    "make_progress",
    "redact",
    "redact_text",
]

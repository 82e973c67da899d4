"""Data-parallel training: torch DDP context for the trainer, ZeRO-1 optimizer-state sharding, launching.

Light at import: torch.distributed.run (the launcher) is imported only by the functions that start workers.
"""

from ddp.context import DDPContext, DDPSetupError, rank_env, resolve_backend, resolve_device
from ddp.sharding import OptimizerStateSharding, assign_owners

__all__ = [
    "DDPContext",
    "DDPSetupError",
    "OptimizerStateSharding",
    "assign_owners",
    "rank_env",
    "resolve_backend",
    "resolve_device",
]

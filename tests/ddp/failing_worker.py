"""A `diffusionlm-train-ddp` worker whose rank 1 raises mid-run; run by torchrun in tests/cli/test_train_ddp.py.

Only the failure is injected; launcher, process group and the other rank are the real ones.
"""

from __future__ import annotations

from cli.train_ddp import main
from diffusionlm.training.trainer import Trainer

FAIL_AT_STEP = 6
_real_step = Trainer.step


def _step_that_fails_on_rank_1(self: Trainer):
    if self.parallel.rank == 1 and self.micro_step >= FAIL_AT_STEP:
        raise RuntimeError(f"injected failure on rank 1 at step {self.micro_step}")
    return _real_step(self)


if __name__ == "__main__":
    Trainer.step = _step_that_fails_on_rank_1
    raise SystemExit(main())

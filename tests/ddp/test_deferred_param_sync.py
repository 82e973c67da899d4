"""ZeRO-1 parameter broadcasts finish lazily, in each module's forward pre-hook, and never leave a rank
computing with stale weights."""

from __future__ import annotations

import torch

from ddp import DDPContext
from ddp.sharding import OptimizerStateSharding
from tests.ddp.ddp_harness import Run, make_batches, spawn, tiny_config


def _worker(rank: int, world_size: int) -> None:
    cfg = tiny_config("adamw", shard=True, accum=1)
    par = DDPContext(cfg.ddp, "cpu")
    run = Run(cfg, par, total_steps=4)
    opt = run.optimizer
    assert isinstance(opt, OptimizerStateSharding) and opt._sync_hooks, "hooks attached for an eager model"
    batches = make_batches(cfg, steps=2, global_batch=4)
    run.step(batches[0])
    assert opt._pending, "broadcasts are still in flight after the step"
    not_owned = [p for p, owner in zip((p for g in run.groups for p in g.params), opt.owners) if owner != rank]
    assert not_owned
    stale = [p.detach().clone() for p in not_owned]
    run.step(batches[1])  # its forward waits bucket by bucket before each module runs
    # After the second step's forward every bucket of step 1 was consumed, and step 2 launched new ones.
    assert any(not torch.equal(a, b) for a, b in zip(stale, not_owned)), "non-owned weights were updated"
    params = run.params()  # settles: every rank now holds identical weights
    gathered: list[dict] = [None] * world_size  # type: ignore[list-item]
    torch.distributed.all_gather_object(gathered, {k: v for k, v in params.items()})
    for other in gathered[1:]:
        for k, v in gathered[0].items():
            assert torch.equal(v, other[k]), k
    assert not opt._pending
    compiled_opt, _ = par.build_optimizer(run.raw, cfg.optimizer, compiled=True)
    assert not compiled_opt._sync_hooks, "no waits inside traced code: compiled models sync at the step"


def test_broadcasts_overlap_the_next_forward_and_ranks_agree() -> None:
    spawn(_worker, 2)

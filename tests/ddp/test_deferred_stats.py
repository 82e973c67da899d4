"""Deferred statistics under DDP (2 real gloo ranks, the real Trainer, fused AdamW on the CPU).

Read one step late, the all-reduced statistics must give exactly the run that reads them at once, and a stop
signal that reaches one rank only must stop every rank after the same step (a rank leaving on its own would
leave the other waiting in a collective).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from ddp_harness import spawn

from config import load_config
from ddp import DDPContext
from diffusionlm.training.trainer import Trainer

STEPS = 12


def _config(out: Path, name: str, deferred: str, shard: bool, steps: int = STEPS):
    return load_config(None, [
        "model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=512", "model.device=cpu",
        "tokenizer.vocab_size=512", "tokenizer.train_docs=300", "model.context_length=32",
        "inference.total_length=32", "data.batch_size=4", f"training.max_train_iteration={steps}",
        "training.log_freq_iteration=4", "training.skip_validation=true", "training.num_samples=0",
        "training.precision=fp32", f"training.deferred_stats={deferred}", "optimizer.optimizer_name=adamw",
        "optimizer.fused=on", f"ddp.shard_optimizer_state={str(shard).lower()}",
        "checkpoint.save_freq_iteration=1000", "logging.progress_bar=off", "logging.backend=noop",
        f"logging.output_dir={out}", f"logging.run_name={name}",
    ])


def _equivalence_worker(rank: int, world_size: int, out: Path) -> None:
    results = {}
    for deferred in ("off", "on"):
        for shard in (False, True):
            cfg = _config(out, f"{deferred}-{int(shard)}", deferred, shard)
            trainer = Trainer(cfg, parallel=DDPContext(cfg.ddp, "cpu"))
            result = trainer.fit()
            assert trainer.defer_stats == (deferred == "on")
            results[(deferred, shard)] = {"losses": result.losses,
                                          "params": {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}}
    torch.save(results, out / f"rank{rank}.pt")


@pytest.mark.slow
def test_deferred_statistics_give_the_same_run_on_two_ranks(tmp_path: Path) -> None:
    spawn(_equivalence_worker, 2, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for shard in (False, True):
        ref = ranks[0][("off", shard)]
        assert [s for s, _ in ref["losses"]] == list(range(1, STEPS + 1))
        assert len({v for _, v in ref["losses"]}) == STEPS  # real, changing losses, not one repeated value
        for r in range(2):
            got = ranks[r][("on", shard)]
            assert got["losses"] == ref["losses"], f"rank {r} shard={shard}"
            for name, value in ref["params"].items():
                assert torch.equal(got["params"][name], value), f"rank {r} shard={shard}: {name}"


def _signal_worker(rank: int, world_size: int, out: Path, deferred: str) -> None:
    cfg = _config(out, f"stop-{deferred}", deferred, shard=True, steps=40)
    trainer = Trainer(cfg, parallel=DDPContext(cfg.ddp, "cpu"))
    real_step = trainer.step

    def step_then_signal():
        stats = real_step()
        if rank == 1 and trainer.micro_step == 5:  # after step 5: SIGTERM to this rank only
            os.kill(os.getpid(), signal.SIGTERM)
        return stats

    trainer.step = step_then_signal
    result = trainer.fit()
    torch.save({"step": result.step, "interrupted": result.interrupted,
                "checkpoints": sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())},
               out / f"stop{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("deferred", ["off", "on"])
def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path: Path, deferred: str) -> None:
    spawn(_signal_worker, 2, tmp_path, deferred)
    got = [torch.load(tmp_path / f"stop{r}.pt", weights_only=False) for r in range(2)]
    assert got[0]["interrupted"] and got[1]["interrupted"]
    assert got[0]["step"] == got[1]["step"]
    # the flag travels with step 6's statistics: read at once, the stop follows step 6; read one step late,
    # step 7 is queued by then and finishes first
    assert got[0]["step"] == (6 if deferred == "off" else 7)
    assert got[0]["checkpoints"] == [f"step_{got[0]['step']}"]

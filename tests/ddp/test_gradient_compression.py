"""`ddp.gradient_compression`: gradients travel (and are averaged) in bf16/fp16 through torch's DDP comm hooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_harness import make_batches, rank_slice, spawn, tiny_config

from ddp import DDPContext
from diffusionlm.diffusion import MDLMObjective
from diffusionlm.models import DiffusionTransformer
from diffusionlm.training.rng import seed_everything


def _grads(cfg, par, batch) -> dict[str, torch.Tensor]:
    seed_everything(0)
    raw = DiffusionTransformer(cfg.model)
    model = par.wrap_model(raw)
    objective = MDLMObjective.from_config(cfg.objective, cfg.model)
    local = rank_slice(batch, par.rank, par.world_size)
    loss, _ = objective(model, {k: local[k] for k in ("input_ids", "attention_mask")},
                        torch.Generator().manual_seed(par.rank), normalizer=100.0)
    loss.backward()
    return {n: p.grad.clone() for n, p in raw.named_parameters()}


def _worker(rank: int, world_size: int, out: Path, dtype: str) -> None:
    batch = make_batches(tiny_config(accum=1), 1, 4)[0][0]
    exact = _grads(tiny_config(accum=1), DDPContext(tiny_config().ddp, "cpu"), batch)
    cfg = tiny_config(accum=1).model_copy(deep=True)
    cfg.ddp.gradient_compression = dtype
    compressed = _grads(cfg, DDPContext(cfg.ddp, "cpu"), batch)
    torch.save({"exact": exact, "compressed": compressed}, out / f"rank{rank}.pt")


@pytest.mark.slow
def test_compressed_gradients_are_the_rounded_average_on_every_rank(tmp_path: Path) -> None:
    spawn(_worker, 2, tmp_path, "fp16")  # gloo: torch's bf16 hook needs NCCL (refused below)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    low = torch.float16
    for name, exact in ranks[0]["exact"].items():
        got = ranks[0]["compressed"][name]
        assert torch.equal(got, ranks[1]["compressed"][name]), name  # every rank holds the same gradient
        assert torch.equal(got, got.to(low).float()), name  # it went through the low-precision all-reduce
        scale = exact.abs().max().item()
        assert (got - exact).abs().max().item() <= 2e-2 * scale + 1e-12, name  # and it is the average
    assert any(not torch.equal(ranks[0]["compressed"][n], ranks[0]["exact"][n]) for n in ranks[0]["exact"])


def test_bf16_compression_on_gloo_is_refused_with_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.train_ddp", "--set", "model.device=cpu", "--set", "ddp.nproc_per_node=1",
         "--set", "ddp.gradient_compression=bf16", "--set", f"logging.output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "ddp.gradient_compression = 'bf16' needs the nccl backend" in done.stderr
    assert not any(tmp_path.iterdir())  # refused before a run directory was made

"""N gloo ranks with per-rank batch B/N == one process with batch B, for AdamW and Muon, with and
without optimizer-state sharding; and sharded state is ~1/N of the unsharded total.

The averaged gradients themselves must match the one-process gradients at fp32 rounding, every step. The
optimizers then amplify rounding differences (sums in another order) where their update is ill-conditioned:
Muon orthogonalises in bfloat16 (measured: a 1e-7 relative gradient perturbation moves Muon weights by ~2e-5
after one step and ~3e-3 after three), and Adam's first steps normalise each element by its own magnitude, so
an element whose gradient is within rounding noise of zero can take a different step of up to lr. So AdamW
weights must match to 1e-5 except at such elements (at most 1%, each within its possible steps), Muon weights
after the first step at the bf16 floor, the losses over all steps, and sharded vs unsharded bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ddp_harness import Run, make_batches, spawn, tiny_config

from ddp import DDPContext
from diffusionlm.training.parallel import SingleProcess

STEPS, GLOBAL_BATCH = 3, 8
SCENARIOS = [("adamw", False), ("adamw", True), ("muon", False), ("muon", True)]


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))


def _train(run: Run, cfg) -> tuple[list[float], dict[str, torch.Tensor]]:
    losses, first = [], {}
    for i, batch in enumerate(make_batches(cfg, STEPS, GLOBAL_BATCH)):
        losses.append(run.step(batch))
        if i == 0:
            first = run.params()
    return losses, first


def _largest_state(optimizer: torch.optim.Optimizer) -> int:
    opt = getattr(optimizer, "local", None) or optimizer
    return max([sum(v.numel() * v.element_size() for v in s.values() if isinstance(v, torch.Tensor))
                for s in opt.state.values()] or [0])


def _state_bytes_of_param(ranks: list[dict], optimizer: str) -> list[int]:
    return [res[(optimizer, False)]["largest"] for res in ranks]


def _assert_within_bf16_noise(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                              init: dict[str, torch.Tensor], where: str) -> None:
    """Muon after one step: the same update up to bf16 rounding (a few percent of its size)."""
    for name, value in ref.items():
        diff, update = (got[name] - value).abs(), (value - init[name]).abs()
        assert diff.max().item() <= 1e-3, f"{where}: {name} differs by {diff.max().item()}"
        assert diff.mean().item() <= 0.06 * update.mean().item(), f"{where}: {name} update differs"


def _ddp_worker(rank: int, world_size: int, out: Path) -> None:
    results = {}
    for optimizer, shard in SCENARIOS:
        cfg = tiny_config(optimizer, shard)
        par = DDPContext(cfg.ddp, "cpu")
        run = Run(cfg, par, STEPS)
        losses, first = _train(run, cfg)
        state_bytes = run.optimizer.local_state_bytes() if shard else _state_bytes(run.optimizer)
        results[(optimizer, shard)] = {"losses": losses, "grad_norms": run.grad_norms, "grads": run.grads,
                                       "first": first,
                                       "params": run.params(), "state_bytes": state_bytes,
                                       "largest": _largest_state(run.optimizer)}
        par.close()
    torch.save(results, out / f"rank{rank}.pt")


def _reference(optimizer: str) -> dict:
    cfg = tiny_config(optimizer)
    run = Run(cfg, SingleProcess(), STEPS)
    losses, first = _train(run, cfg)
    return {"losses": losses, "grad_norms": run.grad_norms, "grads": run.grads, "first": first,
            "params": run.params(), "state_bytes": _state_bytes(run.optimizer), "lr": cfg.optimizer.lr}


def _assert_same_first_gradients(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], where: str) -> None:
    """The first step's averaged gradient (same weights on both sides) equals the one-process gradient up to
    fp32 rounding of the sums."""
    for name, r in ref.items():
        torch.testing.assert_close(got[name], r, rtol=0, atol=1e-4 * r.abs().max().item() + 1e-12,
                                   msg=lambda m, at=f"{where}: first gradient of {name}": f"{at}: {m}")


def _assert_adamw_params_close(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                               got_grads: dict[str, torch.Tensor], ref_grads: dict[str, torch.Tensor], lr: float,
                               where: str) -> None:
    """AdamW weights to 1e-5, except at elements whose first gradient the sums' order moved by more than 0.1%
    of its size (Adam normalises each element by its own magnitude, so there rounding noise is a visible part
    of the step): at most 1% of the elements, each within the lr of its steps."""
    fragile_total = elements = 0
    for name, value in ref.items():
        diff = (got[name] - value).abs()
        noise = (got_grads[name] - ref_grads[name]).abs()
        fragile = noise > 1e-3 * ref_grads[name].abs()
        assert (diff[~fragile] <= 1e-5).all(), f"{where}: {name} differs by {diff[~fragile].max().item()}"
        assert (diff[fragile] <= 2 * lr * STEPS).all(), f"{where}: {name} (noise-dominated elements) differs"
        fragile_total, elements = fragile_total + int(fragile.sum()), elements + value.numel()
    assert fragile_total <= 0.01 * elements, f"{where}: {fragile_total} of {elements} elements noise-dominated"


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_equal_one_process_and_shards_hold_a_fraction_of_the_state(world_size: int, tmp_path: Path) -> None:
    spawn(_ddp_worker, world_size, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
    for optimizer in ("adamw", "muon"):
        ref = _reference(optimizer)
        # not a vacuous comparison: training moved the weights
        init = Run(tiny_config(optimizer), SingleProcess(), STEPS).params()
        assert max((ref["params"][k] - init[k]).abs().max().item() for k in init) > 1e-3
        for shard in (False, True):
            for r, res in enumerate(ranks):
                got = res[(optimizer, shard)]
                where = f"{optimizer} shard={shard} rank {r}"
                assert got["losses"] == pytest.approx(ref["losses"], rel=1e-5 if optimizer == "adamw" else 1e-4), where
                # the averaged gradient itself (Adam and Muon updates hide its scale; clipping does not)
                assert got["grad_norms"][0] == pytest.approx(ref["grad_norms"][0], rel=1e-5), where
                if optimizer == "adamw":
                    _assert_same_first_gradients(got["grads"][0], ref["grads"][0], where)
                    _assert_adamw_params_close(got["params"], ref["params"], got["grads"][0], ref["grads"][0],
                                               ref["lr"], where)
                else:
                    _assert_within_bf16_noise(got["first"], ref["first"], init, where)
        # sharded == unsharded exactly: the same per-parameter update on the same averaged gradients
        for name in ref["params"]:
            sharded, unsharded_run = ranks[0][(optimizer, True)], ranks[0][(optimizer, False)]
            assert torch.equal(sharded["params"][name], unsharded_run["params"][name])
        total = ref["state_bytes"]
        per_rank = [res[(optimizer, True)]["state_bytes"] for res in ranks]
        unsharded = [res[(optimizer, False)]["state_bytes"] for res in ranks]
        print(f"\n{optimizer} world {world_size}: optimizer state bytes per rank sharded {per_rank} "
              f"(max {max(per_rank) / total:.3f} of the unsharded {total}; ideal {1 / world_size:.3f})")
        assert unsharded == [total] * world_size
        assert sum(per_rank) == total  # disjoint and complete
        # whole parameters: greedy largest-first guarantees at most an ideal share plus one parameter's state
        largest = max(_state_bytes_of_param(ranks, optimizer))
        assert max(per_rank) <= total / world_size + largest
        if optimizer == "adamw":  # here no single parameter dominates: close to 1/N
            assert max(per_rank) <= 1.1 * total / world_size

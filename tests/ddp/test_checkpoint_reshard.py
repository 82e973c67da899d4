"""Optimizer checkpoints across world sizes: 2 ranks -> 4 ranks -> 1 rank (same-world resume is checked end
to end, bit for bit, by tests/cli/test_train_ddp.py).

Every load must reproduce, bit for bit, the optimizer state the previous phase saved (whatever rank now
owns each parameter), and the chained AdamW run must equal one uninterrupted single-process run.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from ddp_harness import Run, make_batches, spawn, tiny_config

from ddp import DDPContext
from ddp.sharding import OptimizerStateSharding, named_state
from diffusionlm.training.optim import make_optimizer, param_groups
from diffusionlm.training.parallel import SingleProcess

TOTAL_STEPS, GLOBAL_BATCH = 8, 8
# (phase, world size, sharded, load from, steps)
PHASES = [
    ("a", 2, True, None, range(0, 2)),
    ("c", 4, True, "a", range(2, 5)),  # re-shard up
    ("d", 1, False, "c", range(5, 8)),  # merge into one unsharded optimizer
]


def _held_state(run: Run) -> dict[str, dict]:
    """name -> state this rank holds, independent of how it was loaded."""
    if isinstance(run.optimizer, OptimizerStateSharding):
        return run.optimizer.state_dict()["state"]
    name_of = {id(p): n for g in run.groups for p, n in zip(g.params, g.param_names)}
    return named_state(run.optimizer, name_of, [g.name for g in run.groups])["state"]


def _phase_worker(rank: int, world_size: int, base: Path, phase: str, shard: bool, load_from: str | None,
                  steps: range) -> None:
    for optimizer in ("adamw", "muon"):
        cfg = tiny_config(optimizer, shard)
        run = Run(cfg, DDPContext(cfg.ddp, "cpu"), TOTAL_STEPS)
        out = base / optimizer
        if load_from is not None:
            run.load(out / load_from)
            torch.save(_held_state(run), out / f"{phase}_loaded_rank{rank}.pt")
        batches = make_batches(cfg, TOTAL_STEPS, GLOBAL_BATCH)
        losses = [run.step(batches[i]) for i in steps]
        run.save(out / phase)
        torch.save(_held_state(run), out / f"{phase}_saved_rank{rank}.pt")
        if rank == 0:
            torch.save({"losses": losses, "params": run.params()}, out / f"{phase}_result.pt")


def _union(files: list[Path]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for f in files:
        part = torch.load(f, weights_only=False)
        assert not set(part) & set(merged), f"{f}: a parameter's state is held by two ranks"
        merged.update(part)
    return merged


def _assert_same_state(saved: dict[str, dict], loaded: dict[str, dict], where: str) -> None:
    assert set(saved) == set(loaded), where
    for name, state in saved.items():
        assert set(state) == set(loaded[name]), f"{where}: {name}"
        for key, value in state.items():
            other = loaded[name][key]
            same = torch.equal(torch.as_tensor(value), torch.as_tensor(other).to(torch.as_tensor(value).dtype))
            assert same, f"{where}: {name}.{key} changed across save/load"


@pytest.mark.slow
def test_optimizer_state_survives_resharding_2_4_1(tmp_path: Path) -> None:
    for phase, world, shard, load_from, steps in PHASES:
        spawn(_phase_worker, world, tmp_path, phase, shard, load_from, steps)
    for optimizer in ("adamw", "muon"):
        out = tmp_path / optimizer
        all_names = {n for g in Run(tiny_config(optimizer), SingleProcess(), 1).groups for n in g.param_names}
        for (prev, prev_world, *_), (phase, world, *_rest) in itertools.pairwise(PHASES):
            saved = _union([out / f"{prev}_saved_rank{r}.pt" for r in range(prev_world)])
            loaded = _union([out / f"{phase}_loaded_rank{r}.pt" for r in range(world)])
            assert set(saved) == all_names  # every parameter has state after a step, held exactly once
            _assert_same_state(saved, loaded, f"{optimizer} {prev}->{phase}")
        assert sorted(p.name for p in (out / "c").glob("optimizer_rank*.pt")) == \
            [f"optimizer_rank{r}.pt" for r in range(4)]  # every sharded rank wrote its own shard

    # the chain equals one uninterrupted run (AdamW is deterministic to fp32 rounding; see test_equivalence)
    cfg = tiny_config("adamw")
    ref = Run(cfg, SingleProcess(), TOTAL_STEPS)
    ref_losses = [ref.step(b) for b in make_batches(cfg, TOTAL_STEPS, GLOBAL_BATCH)]
    results = [torch.load(tmp_path / "adamw" / f"{p[0]}_result.pt", weights_only=False) for p in PHASES]
    assert [x for r in results for x in r["losses"]] == pytest.approx(ref_losses, rel=1e-5)
    for name, value in ref.params().items():
        torch.testing.assert_close(results[-1]["params"][name], value, rtol=0, atol=2e-5)


def test_single_process_optimizer_file_converts_to_named_state(tmp_path: Path) -> None:
    """A DDP run can continue a single-device run: torch's index-keyed optimizer.pt maps to names."""
    from ddp.optimizer_files import read_state
    from ddp.sharding import load_named_state

    cfg = tiny_config("muon")
    run = Run(cfg, SingleProcess(), TOTAL_STEPS)
    run.step(make_batches(cfg, 1, GLOBAL_BATCH)[0])
    SingleProcess().save_optimizer(run.optimizer, tmp_path)
    state = read_state(tmp_path, 0, [], run.groups)
    fresh = make_optimizer(param_groups(run.raw, cfg.optimizer), cfg.optimizer)
    name_of = {id(p): n for g in run.groups for p, n in zip(g.params, g.param_names)}
    load_named_state(fresh, name_of, state["state"], state["param_groups"])
    want = named_state(run.optimizer, name_of, [g.name for g in run.groups])["state"]
    assert len(want) == sum(len(g.params) for g in run.groups)
    _assert_same_state(want, named_state(fresh, name_of, [g.name for g in run.groups])["state"], "optimizer.pt")


def test_missing_shard_is_a_clear_error(tmp_path: Path) -> None:
    from ddp.optimizer_files import read_state, write_shard

    cfg = tiny_config("adamw")
    run = Run(cfg, SingleProcess(), TOTAL_STEPS)
    names = [n for g in run.groups for n in g.param_names]
    write_shard(tmp_path, 0, 2, {"format": "x", "state": {}}, names[:2])
    with pytest.raises(FileNotFoundError, match="do not cover parameters"):
        read_state(tmp_path, 1, names, run.groups)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no optimizer state"):
        read_state(empty, 0, names, run.groups)

"""Optimizer state on disk for data-parallel runs: `optimizer_rank<r>.pt`, one per state-holding rank.

Each file holds the state of the parameters that rank owned, keyed by parameter NAME, plus the list of
names it covers. A run at another world size (another ownership) reads all files and takes its names,
which is all that re-sharding takes. A single-process `optimizer.pt` (torch's index-keyed format) is
read too, so a DDP run can continue a single-device one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ddp.sharding import STATE_FORMAT
from diffusionlm.training.optim import ParamGroup

_SHARD_FILE = re.compile(r"^optimizer_rank(\d+)\.pt$")


def shard_path(directory: Path, rank: int) -> Path:
    return directory / f"optimizer_rank{rank}.pt"


def write_shard(directory: Path, rank: int, world_size: int, state: dict[str, Any], owned: list[str]) -> None:
    torch.save(dict(state, rank=rank, world_size=world_size, owned=list(owned)), shard_path(directory, rank))


def _shard_files(directory: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _SHARD_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def read_state(directory: Path, rank: int, needed: list[str], groups: list[ParamGroup]) -> dict[str, Any]:
    """The named optimizer state covering `needed`, from whichever files of `directory` hold it."""
    own = shard_path(directory, rank)
    if own.is_file():
        state = _load(own)
        if set(needed) <= set(state.get("owned", ())):  # same world size and ownership: one file is enough
            return state
    files = _shard_files(directory)
    if not files:
        single = directory / "optimizer.pt"
        if single.is_file():
            return from_torch_format(_load(single), groups)
        raise FileNotFoundError(f"{directory} has no optimizer state (optimizer_rank*.pt or optimizer.pt)")
    merged: dict[str, Any] | None = None
    covered: set[str] = set()
    for path in files:
        shard = _load(path)
        if merged is None:
            merged = {k: v for k, v in shard.items() if k not in ("state", "owned", "rank")}
            merged["state"] = {}
        merged["state"].update(shard["state"])
        covered.update(shard.get("owned", ()))
    missing = sorted(set(needed) - covered)
    if missing:
        raise FileNotFoundError(f"optimizer shards in {directory} do not cover parameters {missing[:5]}"
                                f"{' ...' if len(missing) > 5 else ''}: is a shard file missing?")
    return merged


def from_torch_format(state: dict[str, Any], groups: list[ParamGroup]) -> dict[str, Any]:
    """torch's index-keyed optimizer.state_dict() -> the named format. Indices follow the order of the
    groups' parameters, which is how make_optimizer built the optimizer."""
    names = [n for g in groups for n in g.param_names]
    saved_groups = state["param_groups"]
    if len(saved_groups) != len(groups) or sum(len(g["params"]) for g in saved_groups) != len(names):
        raise ValueError("optimizer.pt does not match this model's parameter groups")
    return {
        "format": STATE_FORMAT,
        "group_names": [g.name for g in groups],
        "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in saved_groups],
        "state": {names[i]: s for i, s in state["state"].items()},
    }

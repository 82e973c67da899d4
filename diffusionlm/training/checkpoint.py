"""Checkpoint directories: written atomically, verified by a manifest, pruned to the latest K, found again on resume.

Layout of `runs/<run>/checkpoints/step_<N>/`:
  model.pt          model state_dict (rank 0)
  optimizer*.pt     written by the parallel context (one file, or one shard per rank)
  trainer.pt        step counters, scheduler, scaler, bad-step count (rank 0)
  rng_rank<r>.pt    every RNG of rank r;  data_rank<r>.pt: rank r's data-stream state
  config.toml, tokenizer.json
  manifest.json     every other file of the directory with its size and sha256 (rank 0, after every rank wrote)
  meta.json         world size, step; written after the manifest
A save goes to `step_<N>.tmp` and is renamed when complete, so a kill mid-save never leaves a
broken latest checkpoint; `.tmp` leftovers are ignored and cleaned up.

A checkpoint is complete when its manifest verifies: every listed file present with its size and checksum,
and the files a resume needs there (`resume_problems`). `resolve_resume("auto")` takes the newest one that
verifies and warns about every newer one it skipped; a checkpoint named explicitly must verify. Checkpoints
written before manifests existed (meta.json, no manifest.json) are accepted with a warning that they cannot
be verified, provided the files a resume needs are there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from diffusionlm.manifest import HASH, MANIFEST, digests, file_problems, read_manifest

_STEP_DIR = re.compile(r"^step_(\d+)$")
_OPTIMIZER_SHARD = re.compile(r"^optimizer_rank\d+\.pt$")
META = "meta.json"
MANIFEST_FORMAT = 1
# What every resume reads besides the optimizer state and the per-rank files (see `resume_problems`).
TRAINER_FILES = ("model.pt", "trainer.pt", "config.toml", "tokenizer.json")


class CheckpointError(RuntimeError):
    pass


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, read-only, no permission); its partial files are gone."""


def _step_of(d: Path) -> int | None:
    m = _STEP_DIR.match(d.name)
    return int(m.group(1)) if m and d.is_dir() else None


def step_dirs(checkpoints_root: Path) -> list[Path]:
    """Every `step_<N>` directory (complete or not), oldest first."""
    if not checkpoints_root.is_dir():
        return []
    found = [(s, d) for d in checkpoints_root.iterdir() if (s := _step_of(d)) is not None]
    return [d for _, d in sorted(found)]


def checkpoint_dirs(checkpoints_root: Path) -> list[Path]:
    """Checkpoints that were marked complete (meta.json), oldest first; `verify_checkpoint` says if they are intact."""
    return [d for d in step_dirs(checkpoints_root) if (d / META).is_file()]


def latest_checkpoint(checkpoints_root: Path) -> Path | None:
    dirs = checkpoint_dirs(checkpoints_root)
    return dirs[-1] if dirs else None


def temp_dir_for(checkpoints_root: Path, step: int) -> Path:
    return checkpoints_root / f"step_{step}.tmp"


def begin_save(checkpoints_root: Path, step: int) -> Path:
    """Rank 0: create a fresh temp directory for the checkpoint of `step`."""
    tmp = temp_dir_for(checkpoints_root, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def save_object(obj: Any, path: Path) -> None:
    """torch.save through a Python file, so that a failed write surfaces as the OSError behind it (ENOSPC, EFBIG,
    ...): torch's own writer reports it only as `RuntimeError: unexpected pos`, with the OSError as its context."""
    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as e:
        cause = write_failure(e)
        if isinstance(cause, OSError) and cause.errno is not None:
            raise OSError(cause.errno, cause.strerror, str(path)) from None
        raise


def write_failure(e: BaseException) -> OSError | RuntimeError | None:
    """The error behind a failed checkpoint write, or None when `e` is not one (a bug: let it propagate).

    An OSError anywhere in the exception's chain is one; so is torch's zip writer failing without telling why
    (files that `parallel` saves by path: `[enforce fail at inline_container.cc...]`)."""
    seen: set[int] = set()
    err: BaseException | None = e
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    if isinstance(e, RuntimeError) and any(s in str(e) for s in ("inline_container", "PytorchStreamWriter",
                                                                  "file write failed")):
        return e
    return None


def write_rank_state(tmp: Path, rank: int, rng_state: dict[str, Any], data_state: dict[str, Any] | None) -> None:
    save_object(rng_state, tmp / f"rng_rank{rank}.pt")
    if data_state is not None:
        save_object(data_state, tmp / f"data_rank{rank}.pt")


# ---------------------------------------------------------------- manifest
def _listed_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.relative_to(directory).as_posix()
                  not in (MANIFEST, META))


def write_manifest(tmp: Path, step: int, world_size: int) -> dict[str, Any]:
    """Rank 0, once every rank has written its files: record each file's size and checksum."""
    files = _listed_files(tmp)
    entries = {p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, HASH: digest}
               for p, digest in zip(files, digests(files))}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "world_size": world_size, "hash": HASH, "files": entries}
    _write_durably(tmp / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def finish_save(tmp: Path, step: int, world_size: int, keep_last: int) -> Path:
    """Rank 0, after every rank wrote its part: write the manifest, mark complete, rename into place, prune."""
    write_manifest(tmp, step, world_size)
    meta = {"step": step, "world_size": world_size, "format": 1}
    _write_durably(tmp / META, json.dumps(meta))
    final = tmp.with_name(f"step_{step}")
    if final.exists():  # re-saving the same step (e.g. a resumed run saving at its start step)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dirs(final.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in final.parent.glob("step_*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def read_meta(ckpt: Path) -> dict[str, Any]:
    meta_path = ckpt / META
    if not meta_path.is_file():
        raise CheckpointError(f"{ckpt}: not a complete checkpoint (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ckpt}: meta.json is unreadable ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int) or \
            not isinstance(meta.get("world_size"), int):
        raise CheckpointError(f"{ckpt}: meta.json lacks step / world_size")
    return meta


def resume_problems(names: Iterable[str], meta: dict[str, Any], world_size: int | None) -> list[str]:
    """What a resume on `world_size` ranks needs that `names` (the checkpoint's files) lacks: the trainer's
    files, the optimizer state, and, when the world size is the same (RNG and data position are restored
    exactly), every rank's rng_rank<r>.pt and data_rank<r>.pt."""
    names = set(names)
    missing = [n for n in TRAINER_FILES if n not in names]
    if "optimizer.pt" not in names and not any(_OPTIMIZER_SHARD.match(n) for n in names):
        missing.append("optimizer.pt (or optimizer_rank*.pt)")
    if world_size is not None and meta.get("world_size") == world_size:
        missing += [f"{kind}_rank{r}.pt" for r in range(world_size) for kind in ("rng", "data")
                    if f"{kind}_rank{r}.pt" not in names]
    return [f"{n} is missing" for n in missing]


def verify_checkpoint(ckpt: Path, world_size: int | None = None) -> bool:
    """Check a checkpoint against its manifest; raises CheckpointError naming every problem found.

    Returns True when the manifest verified, False for a checkpoint written before manifests existed (then only
    the presence of the files a resume needs is checked). `world_size`: also require the per-rank files a
    resume on that many ranks reads.
    """
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: no such checkpoint directory")
    meta = read_meta(ckpt)
    manifest_path = ckpt / MANIFEST
    if not manifest_path.is_file():
        on_disk = [p.relative_to(ckpt).as_posix() for p in _listed_files(ckpt)]
        problems = resume_problems(on_disk, meta, world_size)
        if problems:
            raise CheckpointError(f"{ckpt}: " + "; ".join(problems))
        return False
    try:
        manifest, files, algorithm = read_manifest(ckpt)
    except ValueError as e:
        raise CheckpointError(f"{ckpt}: {e}") from None
    problems = []
    if (manifest.get("step"), manifest.get("world_size")) != (meta["step"], meta["world_size"]):
        problems.append(f"meta.json (step {meta['step']}, world size {meta['world_size']}) disagrees with "
                        f"manifest.json (step {manifest.get('step')}, world size {manifest.get('world_size')})")
    problems += file_problems(ckpt, files, algorithm, files)
    problems += [f"{p.name} is not in manifest.json" for p in sorted(ckpt.glob("*.pt")) if p.name not in files]
    problems += resume_problems(files, meta, world_size)
    if problems:
        raise CheckpointError(f"{ckpt}: " + "; ".join(dict.fromkeys(problems)))
    return True


def checkpoint_bytes(ckpt: Path) -> int:
    """Bytes a checkpoint takes: its manifest's sizes, or the files on disk."""
    try:
        return sum(e["size"] for e in json.loads((ckpt / MANIFEST).read_text())["files"].values())
    except (OSError, ValueError, KeyError, TypeError):
        return sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())


# ---------------------------------------------------------------- resume
def load_rank_file(ckpt: Path, prefix: str, rank: int) -> Any | None:
    path = ckpt / f"{prefix}_rank{rank}.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _unverifiable(ckpt: Path) -> str:
    return (f"warning: checkpoint {ckpt} has no manifest.json (written before checkpoints were verified): "
            "its files cannot be checked")


def newest_verified(checkpoints_root: Path, world_size: int | None = None,
                    warn: Callable[[str], None] = _stderr) -> Path | None:
    """The newest checkpoint under `checkpoints_root` that verifies, warning about each newer one skipped.

    None when there is no checkpoint at all (a fresh start); CheckpointError when there are some but none
    verifies."""
    candidates = step_dirs(checkpoints_root)
    skipped: list[tuple[Path, str]] = []
    for d in reversed(candidates):
        try:
            verified = verify_checkpoint(d, world_size)
        except CheckpointError as e:
            skipped.append((d, str(e).removeprefix(f"{d}: ")))
            continue
        for bad, why in skipped:
            warn(f"warning: skipping checkpoint {bad}: {why}")
        if skipped:
            warn(f"warning: resuming from {d.name} instead, the newest checkpoint that verifies")
        if not verified:
            warn(_unverifiable(d))
        return d
    if not skipped:
        return None
    raise CheckpointError(f"no checkpoint in {checkpoints_root} can be resumed:\n" +
                          "\n".join(f"  {d.name}: {why}" for d, why in skipped))


def resolve_resume(resume: str | None, checkpoints_root: Path, world_size: int | None = None,
                   warn: Callable[[str], None] = _stderr) -> Path | None:
    """`auto` -> the newest checkpoint of this run that verifies (or None: fresh start); a run directory or its
    checkpoints/ folder -> the same inside it; a checkpoint directory -> that one, which must verify."""
    if resume is None:
        return None
    if resume == "auto":
        return newest_verified(checkpoints_root, world_size, warn)
    path = Path(resume)
    if not path.is_dir():
        raise CheckpointError(f"--resume {resume}: no such checkpoint directory")
    if not (path / META).is_file() and _step_of(path) is None:
        # a run directory or its checkpoints/ folder: take the newest checkpoint inside that verifies
        for root in (path / "checkpoints", path):
            if step_dirs(root):
                return newest_verified(root, world_size, warn)
    try:
        verified = verify_checkpoint(path, world_size)
    except CheckpointError as e:
        raise CheckpointError(f"cannot resume from {e}") from None
    if not verified:
        warn(_unverifiable(path))
    return path

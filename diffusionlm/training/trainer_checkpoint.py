"""Saving and restoring a Trainer's whole state through the checkpoint directories of checkpoint.py.

The files hold `Trainer.state_dict()`: rank 0 writes the model and the trainer state, every rank its RNG
and data-stream parts, and `parallel` the optimizer (one file, or one shard per rank); rank 0 then writes the
manifest and renames the directory into place. Each stage ends with a collective vote instead of a plain
barrier: when any rank could not write (disk full, read-only, no permission), every rank learns it at the same
point, rank 0 removes the partial directory and all raise `CheckpointWriteError` together, so no rank is left
waiting at a barrier.

Before a resume, `resume_conflicts` compares the checkpoint with the run about to continue it: the settings
that fix the meaning of the weights (`FROZEN_SETTINGS`) and the tokenizer.
"""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from config import ConfigError, config_to_toml, load_config
from diffusionlm.training import checkpoint as ckpt
from diffusionlm.training.checkpoint import CheckpointError, CheckpointWriteError

if TYPE_CHECKING:
    from config.schema import Config
    from diffusionlm.training.trainer import Trainer

# Settings a resume may not change: they fix the parameter shapes, what the weights and optimizer state mean,
# or which token each id is. Whole sections are named by their prefix; `FREE_SETTINGS` are exempt from it.
FROZEN_SETTINGS = ("model.", "objective.", "tokenizer.path", "tokenizer.vocab_size", "data.packing",
                   "optimizer.optimizer_name")
FREE_SETTINGS = (
    "model.device",  # where it runs
    "model.size",  # a name for d_model / n_layers / n_heads, which are compared themselves
    "model.residual_in_fp32",  # precision of the activations, like training.precision
    "objective.loss_path",  # how the same loss is computed
    "objective.masked_only_logits",
)


# ---------------------------------------------------------------- save
def _agree(trainer: Trainer, error: BaseException | None, tmp: Path, what: str) -> None:
    """Every rank reports whether its part of this stage failed; if any did, all raise together.

    Replaces a barrier (an all-reduce waits for every rank as one does), so the collectives stay matched."""
    par = trainer.parallel
    flag = torch.tensor([0.0 if error is None else 1.0], device=trainer.device)
    failed = int(par.all_reduce_sum(flag).item())
    if not failed:
        return
    if par.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # every rank has stopped writing into it
    if error is None:
        reason = f"{failed} other rank(s) could not write their part ({what})"
    elif isinstance(error, OSError):
        reason = f"{error}{_free_space(tmp.parent)}"
    else:  # torch's writer does not say why: most often no space, or a file-size limit
        reason = f"a file was not written completely ({error}){_free_space(tmp.parent)}"
    raise CheckpointWriteError(f"could not write checkpoint step_{trainer.micro_step} in {tmp.parent}: {reason}; "
                               "its partial files were removed")


def _free_space(directory: Path) -> str:
    try:
        return f" ({shutil.disk_usage(directory).free / (1 << 20):.1f} MiB free there)"
    except OSError:
        return ""


def _attempt(fn: Any) -> BaseException | None:
    try:
        fn()
    except (OSError, RuntimeError) as e:
        cause = ckpt.write_failure(e)
        if cause is None:
            raise
        return cause
    return None


def save_trainer_checkpoint(trainer: Trainer) -> Path:
    """Write the trainer's complete state as checkpoint `step_<micro_step>` (every rank takes part).

    Raises CheckpointWriteError on every rank when any rank's write failed; nothing partial is left behind."""
    par = trainer.parallel
    par.settle_parameters(trainer.optimizer)
    step, root = trainer.micro_step, trainer.run.checkpoints
    with trainer.profiler.range("checkpoint"):
        state = trainer.state_dict()
        tmp = ckpt.temp_dir_for(root, step)
        error = _attempt(lambda: ckpt.begin_save(root, step)) if par.is_main else None
        _agree(trainer, error, tmp, "creating the directory")

        def write_parts() -> None:
            ckpt.write_rank_state(tmp, par.rank, state["rng"], state["data"])
            if par.is_main:
                ckpt.save_object(state["model"], tmp / "model.pt")
                ckpt.save_object({**state["counters"], "scheduler": state["scheduler"], "scaler": state["scaler"]},
                                 tmp / "trainer.pt")
                (tmp / "config.toml").write_text(config_to_toml(trainer.cfg))
                (tmp / "tokenizer.json").write_bytes(trainer.run.tokenizer.read_bytes())
            par.save_optimizer(trainer.optimizer, tmp)

        _agree(trainer, _attempt(write_parts), tmp, "writing the files")
        final = root / f"step_{step}"
        error = None
        if par.is_main:
            error = _attempt(lambda: ckpt.finish_save(tmp, step, par.world_size, trainer.cfg.checkpoint.keep_last))
        _agree(trainer, error, tmp, "writing the manifest")
        if par.is_main and trainer.cfg.wandb.log_checkpoints:
            trainer.logger.log_artifact(final, f"{trainer.run_name}-step{step}", "model")
        par.barrier()
    return final


# ---------------------------------------------------------------- resume
def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _frozen(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in FROZEN_SETTINGS) and \
        key not in FREE_SETTINGS


def _show(value: Any) -> str:
    return "(unset)" if value is None else str(value)


def config_changes(saved_config: Path, cfg: Config) -> list[str]:
    """`key: checkpoint X, now Y` for every frozen setting that differs between a checkpoint's config.toml and
    `cfg`. The checkpoint's file is validated like any config (new settings get their defaults); if the schema
    has moved on so far that it no longer validates, the keys both sides have are compared as written."""
    now = _flatten(cfg.model_dump(mode="json"))
    try:
        then = _flatten(load_config(saved_config, environ={}).model_dump(mode="json"))
        keys = sorted(set(now) | set(then))
    except ConfigError:
        try:
            then = _flatten(tomllib.loads(saved_config.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise CheckpointError(f"cannot read {saved_config}: {e}") from None
        keys = sorted(set(now) & set(then))
    return [f"{k}: checkpoint {_show(then.get(k))}, now {_show(now.get(k))}" for k in keys
            if _frozen(k) and then.get(k) != now.get(k)]


def _tokenizer_id(path: Path) -> tuple[str, str | None]:
    """(sha256 of the file's bytes, sha256 of the tokenizer's canonical JSON or None if it does not load)."""
    from diffusionlm.tokenizer import TokenizerError, load_tokenizer, tokenizer_sha256

    raw = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        return raw, tokenizer_sha256(load_tokenizer(path))
    except TokenizerError:
        return raw, None


def tokenizer_conflict(run_tokenizer: Path, checkpoint: Path) -> str | None:
    """Why the run's tokenizer.json is not the one `checkpoint` was trained with, or None when it is (same bytes,
    or the same tokenizer written differently). A missing run copy is no conflict: it is restored from the
    checkpoint's."""
    saved = checkpoint / "tokenizer.json"
    if not run_tokenizer.is_file() or not saved.is_file():
        return None
    if run_tokenizer.read_bytes() == saved.read_bytes():
        return None
    (raw_run, canon_run), (raw_saved, canon_saved) = _tokenizer_id(run_tokenizer), _tokenizer_id(saved)
    if canon_run is not None and canon_run == canon_saved:
        return None
    return (f"the run's tokenizer {run_tokenizer} (sha256 {raw_run[:16]}) is not the one {checkpoint.name} was "
            f"trained with, {saved} (sha256 {raw_saved[:16]}): token ids would change meaning. Copy the "
            "checkpoint's tokenizer.json back to the run directory to continue this run, or start a new run "
            "(another logging.run_name)")


def resume_conflicts(trainer: Trainer, checkpoint: Path) -> str | None:
    """Why `trainer` may not continue from `checkpoint` (read-only; nothing is written), or None."""
    problems = []
    changes = config_changes(checkpoint / "config.toml", trainer.cfg)
    if changes:
        problems.append(
            f"cannot resume from {checkpoint}: these settings differ from the checkpoint's and may not change on "
            "resume (they fix the shapes or the meaning of the weights):\n" + "\n".join(f"  {c}" for c in changes)
            + f"\nresume with the checkpoint's values (its config: {checkpoint / 'config.toml'}), or start a new "
            "run (another logging.run_name)")
    tok = tokenizer_conflict(trainer.run.tokenizer, checkpoint)
    if tok is not None:
        problems.append(f"cannot resume from {checkpoint}: {tok}")
    return "\n".join(problems) or None


def _load(path: Path, device: torch.device | str = "cpu", weights_only: bool = False) -> Any:
    try:
        return torch.load(path, map_location=device, weights_only=weights_only)
    except Exception as e:  # a damaged file fails in many ways (zip, pickle, EOF, ...); say which file
        raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def load_trainer_checkpoint(trainer: Trainer, path: Path) -> None:
    """Restore model, optimizer, scheduler, counters and (same world size) RNG and data position."""
    par = trainer.parallel
    meta = ckpt.read_meta(path)
    saved = _load(path / "trainer.pt")
    same_world = meta["world_size"] == par.world_size
    rng = data = None
    if same_world:
        rng, data = _load(path / f"rng_rank{par.rank}.pt"), _load(path / f"data_rank{par.rank}.pt")
    try:
        trainer.load_state_dict({
            "model": _load(path / "model.pt", trainer.device, weights_only=True),
            "counters": {"micro_step": saved["micro_step"], "bad_steps": saved["bad_steps"]},
            "scheduler": saved["scheduler"],
            "scaler": saved["scaler"],
            "rng": rng,
            "data": data,
        })
    except (RuntimeError, KeyError) as e:  # e.g. size mismatch: a model that is not this config's
        raise CheckpointError(f"cannot resume from {path}: {e}") from None
    try:
        par.load_optimizer(trainer.optimizer, path)
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(f"cannot resume from {path}: {e}") from None
    if not same_world:
        trainer.logger.info(
            f"warning: checkpoint written by {meta['world_size']} ranks, resuming on {par.world_size}: "
            "model and optimizer restored exactly; data order and RNG streams restart"
        )

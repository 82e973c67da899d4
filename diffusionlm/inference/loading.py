"""Load a trained model for inference from a run directory, a checkpoint, or a `final/` export."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn as nn

from config import load_config
from config.schema import Config
from diffusionlm.device import resolve_precision
from diffusionlm.manifest import MANIFEST, file_problems, read_manifest
from diffusionlm.models import build_model
from diffusionlm.ops import PYTORCH, KernelPolicy


class ModelLoadError(ValueError):
    pass


# What inference reads of a training checkpoint; checked against the checkpoint's manifest.json (see
# diffusionlm/training/checkpoint.py: every file with its size and checksum).
_CHECKPOINT_FILES = ("model.pt", "config.toml", "tokenizer.json")


def _manifest_problem(d: Path) -> str | None:
    """Why the files inference reads from checkpoint `d` do not match its manifest, or None. A checkpoint without
    manifest.json (written before checkpoints had one, or not a training checkpoint) has nothing to check."""
    if not (d / MANIFEST).is_file():
        return None
    try:
        _, files, algorithm = read_manifest(d)
    except ValueError as e:
        return str(e)
    problems = file_problems(d, files, algorithm, _CHECKPOINT_FILES)
    return problems[0] if problems else None


def _locate(path: Path) -> Path:
    """The directory holding the weights: final/ beats the newest intact checkpoint inside a run directory."""
    if (path / "model.safetensors").is_file() or (path / "model.pt").is_file():
        problem = _manifest_problem(path)
        if problem is not None:
            raise ModelLoadError(f"checkpoint {path} is damaged: {problem}")
        return path
    if (path / "final" / "model.safetensors").is_file():
        return path / "final"
    ckpts = sorted(
        (d for d in (path / "checkpoints").glob("step_*") if (d / "meta.json").is_file() and d.name[5:].isdigit()),
        key=lambda d: int(d.name.split("_")[1]),
    ) if (path / "checkpoints").is_dir() else []
    for d in reversed(ckpts):
        problem = _manifest_problem(d)
        if problem is None:
            return d
        print(f"warning: skipping checkpoint {d}: {problem}", file=sys.stderr)
    if ckpts:
        raise ModelLoadError(f"no intact checkpoint in {path / 'checkpoints'} (see the warnings above)")
    raise ModelLoadError(f"no model found in {path} (expected model.safetensors, model.pt, final/ or checkpoints/)")


def _find_upwards(start: Path, name: str, levels: int = 3) -> Path | None:
    for d in [start, *list(start.parents)[:levels]]:
        if (d / name).is_file():
            return d / name
    return None


def load_model(path: str | Path, device: torch.device | str = "cpu", kernels: KernelPolicy = PYTORCH,
               ) -> tuple[nn.Module, Config, Path]:
    """Returns (model in eval mode, built with `kernels`, the run's config, path of its tokenizer.json)."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"checkpoint path does not exist: {path}")
    where = _locate(path)
    if (where / "config.json").is_file():
        cfg = Config.model_validate(json.loads((where / "config.json").read_text()))
    else:
        cfg_path = _find_upwards(where, "config.toml")
        if cfg_path is None:
            raise ModelLoadError(f"no config.toml or config.json next to {where}")
        cfg = load_config(cfg_path)
    model = build_model(cfg.model, kernels)
    if (where / "model.safetensors").is_file():
        from safetensors.torch import load_model as load_safetensors

        load_safetensors(model, str(where / "model.safetensors"))
    else:
        model.load_state_dict(torch.load(where / "model.pt", map_location="cpu", weights_only=True))
    tok = _find_upwards(where, "tokenizer.json")
    if tok is None:
        raise ModelLoadError(f"no tokenizer.json next to {where}")
    return model.to(device).eval(), cfg, tok


def inference_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype sampling runs in: training's precision policy ("auto": bf16 on CUDA, fp32 on a CPU), applied
    to the weights themselves since nothing needs fp32 master copies when sampling."""
    return resolve_precision(precision, device).dtype or torch.float32

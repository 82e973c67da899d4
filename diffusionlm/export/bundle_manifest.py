"""A bundle's `manifest.json`: what each file is, how it was made and checked, and every file's size and sha256.

The file table has the shape of a checkpoint's manifest (`files: {name: {size, sha256}}`, `hash`), so the same
`diffusionlm.manifest.file_problems` verifies both, and a copy onto a device can be checked before it is trusted.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

import torch.nn as nn

from config.schema import Config
from diffusionlm.manifest import HASH, MANIFEST, digests, file_problems, read_manifest

FORMAT = "diffusionlm-export/1"
# Static shapes and an fp32 graph: TensorRT picks fp16 kernels per layer where --fp16 allows them, and keeps a
# layer in fp32 where that is faster or fp16 cannot run it.
TRTEXEC = "trtexec --onnx=denoiser.onnx --fp16 --saveEngine=denoiser.plan"


def versions() -> dict[str, str | None]:
    """The software that wrote the bundle; a runtime older than the exporter may not read its files."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("diffusionlm", "torch", "onnx", "onnxscript", "onnxruntime", "safetensors"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def model_summary(model: nn.Module, run_cfg: Config) -> dict[str, Any]:
    """The shape of the network, as a deploy script needs it without reading config.toml."""
    m = run_cfg.model
    summary: dict[str, Any] = {"family": m.family, "objective": run_cfg.objective.name,
                               "vocab_size": m.vocab_size, "context_length": m.context_length,
                               "mask_token_id": m.mask_token_id}
    for key in ("d_model", "n_layers", "n_heads", "time_conditioning", "causal", "tie_embeddings"):
        if hasattr(m, key):
            summary[key] = getattr(m, key)
    if hasattr(model, "num_params"):
        summary["num_params"] = model.num_params(include_embeddings=True)
    return summary


def write_manifest(directory: Path, content: dict[str, Any]) -> dict[str, Any]:
    """Write `content` plus the size and sha256 of every other file of `directory` as manifest.json."""
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)
    sums = digests([directory / n for n in names])
    manifest = {"format": FORMAT, **content, "hash": HASH,
                "files": {n: {"size": (directory / n).stat().st_size, HASH: s} for n, s in zip(names, sums)}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify_bundle(directory: Path) -> list[str]:
    """What is wrong with the bundle at `directory`: an unreadable or foreign manifest, or files missing, extra,
    truncated or modified. Empty when it is intact."""
    try:
        manifest, files, algorithm = read_manifest(directory)
    except ValueError as e:
        return [str(e)]
    if manifest.get("format") != FORMAT:
        return [f"manifest.json is not a bundle manifest (format {manifest.get('format')!r}, expected {FORMAT!r})"]
    present = {p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST}
    extra = [f"{n} is not in manifest.json" for n in sorted(present - set(files))]
    return file_problems(directory, files, algorithm, sorted(files)) + extra

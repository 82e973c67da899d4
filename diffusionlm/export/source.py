"""Where a bundle's weights came from, recorded in its manifest so a deployed model can be traced to its run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffusionlm.inference.loading import _locate
from diffusionlm.manifest import MANIFEST, file_digest


def describe_source(path: Path) -> dict[str, Any]:
    """The path given, the directory the weights were read from (the one `load_model` picks: final/ before the
    newest intact checkpoint), the weights file's sha256, and the training step and checkpoint manifest's sha256
    where that directory is a checkpoint (a final/ export records neither)."""
    where = _locate(path)  # the rule load_model applied; a second copy of it could drift from the first
    weights = next(where / name for name in ("model.safetensors", "model.pt") if (where / name).is_file())
    step = None
    if (where / "meta.json").is_file():
        try:
            step = json.loads((where / "meta.json").read_text()).get("step")
        except (OSError, ValueError):
            step = None
    manifest = where / MANIFEST
    return {
        "path": str(path.resolve()),
        "weights_dir": str(where.resolve()),
        "weights_file": weights.name,
        "weights_sha256": file_digest(weights),
        "step": step,
        "checkpoint_manifest_sha256": file_digest(manifest) if manifest.is_file() else None,
    }

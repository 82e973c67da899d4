"""Final weights for inference and export: `final/{model.safetensors, config.json, tokenizer.json}`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch.nn as nn

from config.schema import Config


def export_final(model: nn.Module, cfg: Config, tokenizer_path: Path, out_dir: Path) -> Path:
    from safetensors.torch import save_model

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding/head weight
    (tmp / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir

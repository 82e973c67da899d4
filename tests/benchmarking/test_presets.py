"""Benchmark presets: every file is a valid config with the shape its name stands for; unknown names are refused."""

from __future__ import annotations

import pytest

from benchmarking.preset import PRESETS_DIR, preset_names, preset_path
from config import load_config

# name: d_model, n_layers, n_heads, context_length, vocab_size, batch_size
EXPECTED = {
    "small": (384, 6, 6, 256, 8192, 256),
    "medium": (512, 8, 8, 256, 8192, 256),
    "base": (768, 12, 12, 1024, 32768, 64),
}


def test_the_three_presets_exist() -> None:
    assert preset_names() == sorted(EXPECTED)
    assert sorted(p.stem for p in PRESETS_DIR.glob("*.toml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_loads_with_its_dimensions(name: str) -> None:
    path = preset_path(name)
    assert path == PRESETS_DIR / f"{name}.toml" and path.is_file()
    assert path.read_text(encoding="utf-8").startswith("# Benchmark preset")
    cfg = load_config(path)
    m = cfg.model
    assert (m.d_model, m.n_layers, m.n_heads, m.context_length, m.vocab_size, cfg.data.batch_size) == EXPECTED[name]
    assert cfg.inference.total_length == m.context_length
    assert m.residual_in_fp32 is False
    assert (cfg.training.precision, cfg.training.compile, cfg.optimizer.optimizer_name) == ("bf16", True, "adamw")


def test_base_is_the_xlarge_size() -> None:
    assert load_config(preset_path("base")).model.size == "xlarge"


def test_unknown_preset_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'; known presets: base, medium, small"):
        preset_path("huge")

"""Named benchmark configurations: full TOML configs in `benchmarking/presets/`, one file per name.

A preset is an ordinary config file (`diffusionlm-train --config benchmarking/presets/base.toml`); the
results and the README in `benchmarking/` name their figures by it, and `benchmarking/reference.py` reads
the same file so that both sides of a ratio measure one shape.
"""

from __future__ import annotations

from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    """The presets that exist, sorted by name."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    """The TOML file of preset `name`; an unknown name raises ValueError listing the known ones."""
    names = preset_names()
    if name not in names:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(names) or '(none)'}")
    return PRESETS_DIR / f"{name}.toml"

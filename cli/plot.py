"""diffusionlm-plot: training curves of a run (loss, validation NELBO, learning rate, tokens/s) as a PNG.

Reads `runs/<run>/metrics.jsonl` (one JSON object per line, as every run writes it) and renders with
matplotlib's Agg backend, so it works on a headless GPU host as well as on a laptop.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

# (metric key, panel title)
PANELS: tuple[tuple[str, str], ...] = (
    ("metrics.loss", "training loss"),
    ("val.nelbo", "validation NELBO (nats/token)"),
    ("metrics.lr", "learning rate"),
    ("metrics.tokens_per_s", "tokens/s"),
)


class PlotError(Exception):
    """Input that cannot be plotted; the message is for the user."""


def metrics_path(run: str | Path) -> Path:
    """`run` is a run directory holding metrics.jsonl, or the file itself."""
    p = Path(run)
    path = p / "metrics.jsonl" if p.is_dir() else p
    if not path.is_file():
        where = f"in run directory {p}" if p.is_dir() else f"at {p}"
        raise PlotError(f"no metrics.jsonl {where} (train a run first, or pass runs/<run>)")
    return path


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, unreadable lines): a run killed mid-write may leave one broken line, which is skipped."""
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int | float):
            records.append(rec)
        else:
            bad += 1
    if not records:
        raise PlotError(f"{path} has no metric records (empty, or no line with a 'step' field)")
    return records, bad


def series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key`, skipping records without it and non-finite or null values."""
    xs, ys = [], []
    for rec in records:
        value = rec.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            xs.append(float(rec["step"]))
            ys.append(float(value))
    return xs, ys


def render(records: list[dict[str, Any]], output: Path, title: str) -> list[str]:
    """Draw the 2x2 panels to `output`; returns the keys that had data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    drawn = []
    for ax, (key, label) in zip(axes.flat, PANELS):
        xs, ys = series(records, key)
        ax.set_title(label)
        ax.set_xlabel("micro-step")
        if xs:
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
            ax.grid(alpha=0.3)
            drawn.append(key)
        else:
            ax.text(0.5, 0.5, f"no {key} in this run", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return drawn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusionlm-plot", description=__doc__)
    parser.add_argument("run", help="run directory (runs/<run>) or a metrics.jsonl file")
    parser.add_argument("--output", "-o", metavar="PNG", help="default: <run>/curves.png")
    args = parser.parse_args(argv)
    try:
        path = metrics_path(args.run)
        records, bad = read_records(path)
    except (PlotError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else path.parent / "curves.png"
    if output.suffix.lower() != ".png":
        print(f"error: --output {output}: expected a .png path", file=sys.stderr)
        return 2
    drawn = render(records, output, title=path.parent.name)
    if bad:
        print(f"warning: skipped {bad} unreadable line(s) in {path}", file=sys.stderr)
    print(f"wrote {output} ({len(records)} records; curves: {', '.join(drawn) or 'none'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

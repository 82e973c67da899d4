"""diffusionlm-plot: training curves of one run or several overlaid (loss, validation NELBO or NLL, learning rate,
tokens/s) as a PNG.

Reads `runs/<run>/metrics.jsonl` (one JSON object per line, as every run writes it) and renders with
matplotlib's Agg backend, so it works on a headless GPU host as well as on a laptop. Several runs share the
panels, one labelled line each (an MDLM and its AR baseline: `val.nelbo` is the NELBO bound of the one and the
exact NLL of the other, both in nats/token).
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
    ("val.nelbo", "validation NELBO / AR NLL (nats/token)"),
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


def render(runs: dict[str, list[dict[str, Any]]], output: Path, title: str) -> list[str]:
    """Draw the 2x2 panels to `output`, a line per run (label -> records); returns the keys that had data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    drawn = []
    for ax, (key, label) in zip(axes.flat, PANELS):
        ax.set_title(label)
        ax.set_xlabel("micro-step")
        for name, records in runs.items():
            xs, ys = series(records, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
        if ax.lines:
            ax.grid(alpha=0.3)
            if len(runs) > 1:
                ax.legend(fontsize=8)
            drawn.append(key)
        else:
            ax.text(0.5, 0.5, f"no {key} in {'these runs' if len(runs) > 1 else 'this run'}", ha="center",
                    va="center", transform=ax.transAxes)
    fig.suptitle(title)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return drawn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusionlm-plot", description=__doc__)
    parser.add_argument("run", nargs="+", help="run directories (runs/<run>) or metrics.jsonl files, overlaid")
    parser.add_argument("--output", "-o", metavar="PNG", help="default: <first run>/curves.png")
    parser.add_argument("--title", help="default: the run names")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        paths = [metrics_path(run) for run in args.run]
        for path in paths:
            records, bad = read_records(path)
            if bad:
                print(f"warning: skipped {bad} unreadable line(s) in {path}", file=sys.stderr)
            runs[_label(path, runs)] = records
    except (PlotError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else paths[0].parent / "curves.png"
    if output.suffix.lower() != ".png":
        print(f"error: --output {output}: expected a .png path", file=sys.stderr)
        return 2
    drawn = render(runs, output, title=args.title or ", ".join(runs))
    counts = ", ".join(str(len(r)) for r in runs.values())
    print(f"wrote {output} ({counts} records; curves: {', '.join(drawn) or 'none'})")
    return 0


def _label(path: Path, taken: dict[str, Any]) -> str:
    """A run's name in the legend: its directory, made unique."""
    name, n = path.parent.name or str(path), 2
    label = name
    while label in taken:
        label, n = f"{name} ({n})", n + 1
    return label


if __name__ == "__main__":
    raise SystemExit(main())

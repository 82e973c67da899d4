"""`diffusionlm-eval`: held-out likelihood (MDLM NELBO bound / AR exact NLL), masked-token accuracy and sample
quality of trained runs, as JSON on stdout (and `--output FILE`) with a readable table on stderr.

    diffusionlm-eval --checkpoint runs/mdlm --checkpoint runs/ar       # both on the same text, and the gap
    diffusionlm-eval --samples samples.jsonl --judge runs/ar            # generative perplexity, entropy, distinct-n
    diffusionlm-eval --checkpoint runs/mdlm --generate 64 --judge runs/ar

Bad input (no checkpoint, a path that is not a run, K < 1, a mask rate outside (0, 1), a metric of another
objective...) exits 2 with `error:` naming the setting.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from config import add_config_arguments, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusionlm-eval", description="Evaluate trained runs: NELBO / NLL on "
                                     "held-out text, masked-token accuracy, sample quality.")
    add_config_arguments(parser, "eval.toml")
    parser.add_argument("--checkpoint", action="append", default=None, metavar="PATH",
                        help="run dir, checkpoint dir or final/ export; repeat to compare (overrides eval.checkpoint)")
    parser.add_argument("--samples", default=None, metavar="FILE",
                        help="texts to score: one per line, or JSON lines (overrides eval.samples)")
    parser.add_argument("--judge", default=None, metavar="PATH", help="checkpoint that scores samples (eval.judge)")
    parser.add_argument("--generate", type=int, default=None, metavar="N",
                        help="generate N samples from each MDLM checkpoint and score them (eval.generate)")
    parser.add_argument("--output", default=None, metavar="FILE", help="also write the JSON here (eval.output)")
    return parser


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The flags as `--set eval.*` assignments, so they are validated (and reported) like every other setting."""
    out = []
    if args.checkpoint is not None:
        out.append(f"eval.checkpoint={json.dumps(args.checkpoint)}")
    for flag, key in (("samples", "samples"), ("judge", "judge"), ("output", "output")):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"eval.{key}={json.dumps(value)}")
    if args.generate is not None:
        out.append(f"eval.generate={args.generate}")
    return out


def _finite(obj: Any) -> Any:
    """JSON has no inf/NaN: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = [*args.overrides, *_flag_overrides(args)]
    cfg = config_from_args(args, "eval.toml")
    # The [data] keys given to this command (file or --set) apply on top of the evaluated run's own [data].
    data_overrides = {key: getattr(cfg.data, key) for key in cfg.data.model_fields_set}

    if cfg.eval.output and not Path(cfg.eval.output).resolve().parent.is_dir():
        print(f"error: eval.output: the directory of {cfg.eval.output} does not exist", file=sys.stderr)
        return 2

    from diffusionlm.data import DataError
    from diffusionlm.evaluation import EvalError, SamplesError, evaluate, format_table
    from diffusionlm.tokenizer import TokenizerError

    try:
        report = evaluate(cfg, data_overrides)
    except (EvalError, SamplesError, DataError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(_finite(report), indent=2)
    print(format_table(report), file=sys.stderr)
    sys.stdout.write(text + "\n")
    if cfg.eval.output:
        try:
            Path(cfg.eval.output).write_text(text + "\n", encoding="utf-8")
        except OSError as e:
            print(f"error: eval.output: cannot write {cfg.eval.output}: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

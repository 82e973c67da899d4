"""`diffusionlm-train`: train a masked diffusion LM on one device."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from config import add_config_arguments, config_from_args

if TYPE_CHECKING:  # the training stack is imported only once a run starts (fast --help)
    from config.schema import Config
    from diffusionlm.training.parallel import SingleProcess


def build_parser(prog: str = "diffusionlm-train", default_resource: str = "train.toml") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train a masked diffusion language model.")
    add_config_arguments(parser, default_resource)
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="continue from the latest checkpoint of the run ('auto') or from a checkpoint directory")
    return parser


def run_training(cfg: Config, resume: str | None, parallel: SingleProcess | None = None) -> int:
    """Run and map the known failures to exit codes: 2 for bad input, 1 for a diverged run."""
    from diffusionlm.data import DataError
    from diffusionlm.tokenizer import TokenizerError
    from diffusionlm.training import Trainer, TrainingDiverged, TrainingError

    try:
        result = Trainer(cfg, parallel=parallel, resume=resume).fit()
    except (DataError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if parallel is not None and not parallel.is_main:
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"interrupted at step {result.step}; resume with --resume {result.run_dir / 'checkpoints'}",
              file=sys.stderr)
        return 130
    print(f"run finished at step {result.step}: {result.run_dir}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args, "train.toml")
    return run_training(cfg, args.resume)


if __name__ == "__main__":
    raise SystemExit(main())

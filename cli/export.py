"""`diffusionlm-export`: an edge deploy bundle of a trained model (fp16 safetensors, a torch.export program, ONNX
for onnxruntime or a TensorRT fp16 engine, a manifest with parity figures and checksums). docs/export.md.

    diffusionlm-export --checkpoint runs/<run> --output bundles/<name> [--target jetson|generic] [--length 128]
                       [--batch 1] [--opset 18] [--force]

Bad input (no checkpoint, a path that is not a run, a length outside 1..context_length, batch < 1, an output
directory that is not empty without --force, the `export` extra not installed) exits 2 with `error:` naming the
setting; a bundle whose artifacts do not reproduce the model exits 1. Either way nothing is left at the output.
"""

from __future__ import annotations

import argparse
import json
import sys

from config import add_config_arguments, config_from_args

# handy flags, each the same as --set export.<key>=VALUE (typed and checked by the schema)
FLAGS = {"target": "target", "length": "length", "batch": "batch", "opset": "opset", "seed": "seed"}
PATH_FLAGS = {"checkpoint": "checkpoint", "output": "output"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusionlm-export", description="Write an edge deploy bundle of a "
                                     "trained model: fp16 safetensors, torch.export program, ONNX, manifest.",
                                     epilog="Every [export] setting can also be given as --set export.KEY=VALUE.")
    add_config_arguments(parser, "export.toml")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="run dir, checkpoint dir or final/ export (export.checkpoint)")
    parser.add_argument("--output", default=None, metavar="DIR", help="bundle directory to write (export.output)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    for flag, key in FLAGS.items():
        parser.add_argument(f"--{flag}", dest=f"flag_{key}", default=None, metavar="VALUE", help=f"export.{key}")
    return parser


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The flags as `--set export.*` assignments, so they are validated (and reported) like every other setting."""
    out = [f"export.{key}={json.dumps(getattr(args, flag))}" for flag, key in PATH_FLAGS.items()
           if getattr(args, flag) is not None]
    return out + [f"export.{key}={getattr(args, 'flag_' + key)}" for key in FLAGS.values()
                  if getattr(args, "flag_" + key) is not None]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = [*args.overrides, *_flag_overrides(args)]
    cfg = config_from_args(args, "export.toml")

    from diffusionlm.export import ExportError, ParityError, check_request, export_bundle

    try:
        check_request(cfg.export, args.force)  # before the model loads: missing packages, an output in the way
        bundle = export_bundle(cfg.export, args.force)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    manifest = bundle.manifest
    parity = manifest["parity"]
    print(f"wrote {bundle.path} ({len(manifest['files'])} files, batch {manifest['batch']} x length "
          f"{manifest['length']}); max abs logit diff vs eager fp32: torch.export "
          f"{parity['torch_export']['max_abs_diff']:.3g}, onnxruntime {parity['onnxruntime']['max_abs_diff']:.3g}, "
          f"fp16 weights {parity['fp16_weights']['max_abs_diff']:.3g} (argmax agreement "
          f"{parity['fp16_weights']['argmax_agreement']:.3f}); TensorRT: {manifest['tensorrt']['build']}",
          file=sys.stderr)
    sys.stdout.write(json.dumps({"bundle": str(bundle.path), "parity": parity}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

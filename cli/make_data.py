"""diffusionlm-make-data: tokenize the configured source once into binary token shards."""

from __future__ import annotations

import argparse
import sys
import time

from config import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="diffusionlm-make-data",
        description="Tokenize the configured data source into train/val token shards (uint16 or uint32) with "
        "meta.json and tokenizer.json; train with data.source='shards', data.shards_dir=DIR.",
    )
    add_config_arguments(parser, "train.toml")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="directory for the shards; must be empty or absent unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the shards of an earlier diffusionlm-make-data in DIR (a directory holding "
                        "anything else, such as a run directory, is still refused)")
    parser.add_argument("--shard-tokens", type=int, default=100_000_000, metavar="N",
                        help="start a new shard after about N tokens (default: 100M)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, "train.toml")

    from diffusionlm.data import DataError, iter_texts
    from diffusionlm.data.make_shards import check_output_dir, make_shards
    from diffusionlm.tokenizer import TokenizerError, build_tokenizer

    show = not args.no_progress and sys.stderr.isatty()
    t0 = time.perf_counter()
    try:
        check_output_dir(args.output, args.overwrite)  # before the tokenizer is trained: refuse in seconds
        tok = build_tokenizer(cfg, iter_texts(cfg, "train"), show_progress=show)
        meta = make_shards(cfg, tok, args.output, args.shard_tokens, show_progress=show, overwrite=args.overwrite)
    except (DataError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, info in meta["splits"].items():
        print(f"{split}: {info['tokens']} tokens, {info['docs']} docs in {len(info['shards'])} shard(s), "
              f"{info['skipped_rows']} skipped, {info['truncated_rows']} truncated")
    print(f"wrote {args.output} ({meta['dtype']}) in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

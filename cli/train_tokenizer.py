"""diffusionlm-train-tokenizer: train a byte-level BPE on the configured data and write tokenizer.json."""

from __future__ import annotations

import argparse
import sys
import time

from config import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="diffusionlm-train-tokenizer",
        description="Train a byte-level BPE tokenizer (special ids <pad>=0 <bos>=1 <eos>=2 <mask>=3 <unk>=4) on "
        "the first tokenizer.train_docs documents of the configured data source and save it as tokenizer.json.",
    )
    add_config_arguments(parser, "train.toml")
    parser.add_argument("--output", required=True, metavar="PATH", help="where to write tokenizer.json")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, "train.toml")

    from diffusionlm.data import DataError, iter_texts
    from diffusionlm.tokenizer import TokenizerError, build_tokenizer, save_tokenizer, tokenizer_sha256

    cfg.tokenizer.path = None  # this command always trains
    t0 = time.perf_counter()
    try:
        tok = build_tokenizer(cfg, iter_texts(cfg, "train"), show_progress=not args.no_progress and sys.stderr.isatty())
    except (DataError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_tokenizer(tok, args.output)
    print(
        f"wrote {args.output}: vocab {tok.get_vocab_size()}, sha256 {tokenizer_sha256(tok)[:12]}, "
        f"{time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

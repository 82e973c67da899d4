"""diffusionlm-bench-tokenizer: byte-level BPE training and encoding throughput (tokens/s, bytes/s)."""

from __future__ import annotations

import argparse
import datetime
import itertools
import sys
import time

from benchmarking.common import (
    SHARED_TINYSTORIES,
    cpu_description,
    display_paths,
    emit_report,
    git_commit,
    stream_local_jsonl,
)
from config import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusionlm-bench-tokenizer", description=__doc__)
    add_config_arguments(parser, "train.toml")
    parser.add_argument("--jsonl", default=str(SHARED_TINYSTORIES),
                        help="documents to train and encode (default: the shared TinyStories sample; "
                        "the built-in corpus when it is missing)")
    parser.add_argument("--docs", type=int, default=4000, help="documents used")
    parser.add_argument("--repeats", type=int, default=3, help="encoding passes (best is reported)")
    parser.add_argument("--output", default=None, metavar="PATH", help="also write the JSON here")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, "train.toml")

    from diffusionlm.data import DataError, iter_texts
    from diffusionlm.tokenizer import train_tokenizer

    stream_local_jsonl(cfg, args.jsonl)
    try:
        docs = list(itertools.islice(iter_texts(cfg, "train"), args.docs))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    t0 = time.perf_counter()
    tok = train_tokenizer(docs, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency)
    train_s = time.perf_counter() - t0
    results = {}
    for mode in ("encode_batch", "encode"):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            if mode == "encode_batch":
                n_tokens = sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
            else:
                n_tokens = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
            best = min(best, time.perf_counter() - t0)
        results[mode] = {"seconds": round(best, 4), "tokens": n_tokens, "tokens_per_s": round(n_tokens / best, 1),
                         "bytes_per_s": round(n_bytes / best, 1)}
    report = {
        "benchmark": "tokenizer",
        "date": datetime.date.today().isoformat(),
        "git_commit": git_commit(),
        "device": cpu_description(),
        "config": {"source": cfg.data.source, "data_files": display_paths(cfg.data.data_files), "docs": len(docs),
                   "bytes": n_bytes, "vocab_size": cfg.tokenizer.vocab_size,
                   "min_frequency": cfg.tokenizer.min_frequency},
        "train": {"seconds": round(train_s, 3), "bytes_per_s": round(n_bytes / train_s, 1)},
        "encode": results,
        "bytes_per_token": round(n_bytes / results["encode_batch"]["tokens"], 3),
    }
    emit_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

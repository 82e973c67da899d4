"""diffusionlm-bench-data: data pipeline throughput (tokens/s) with 0 and N workers, for streaming with
on-the-fly tokenization (a local TinyStories jsonl, or the built-in corpus) and for pre-tokenized shards."""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from typing import Any

from benchmarking.common import (
    SHARED_TINYSTORIES,
    cpu_description,
    display_paths,
    emit_report,
    git_commit,
    stream_local_jsonl,
)
from config import add_config_arguments, config_from_args


def measure(stream: Any, batches: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):  # worker start-up and shuffle-buffer fill are not steady-state throughput
        next(stream)
    t0 = time.perf_counter()
    tokens = 0
    for _ in range(batches):
        tokens += next(stream)["input_ids"].numel()
    dt = time.perf_counter() - t0
    stream.close()
    return {"tokens": tokens, "seconds": round(dt, 4), "tokens_per_s": round(tokens / dt, 1),
            "batches_per_s": round(batches / dt, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusionlm-bench-data", description=__doc__)
    add_config_arguments(parser, "train.toml")
    parser.add_argument("--jsonl", default=str(SHARED_TINYSTORIES),
                        help="local jsonl for the streaming case (default: the shared TinyStories sample; "
                        "the built-in corpus when it is missing)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="num_workers values to compare")
    parser.add_argument("--batches", type=int, default=200, help="timed batches per case")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--output", default=None, metavar="PATH", help="also write the JSON here")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, "train.toml")

    from diffusionlm.data import DataError, build_stream, iter_texts
    from diffusionlm.data.make_shards import make_shards
    from diffusionlm.tokenizer import build_tokenizer, tokenizer_sha256

    if not stream_local_jsonl(cfg, args.jsonl):
        print(f"note: {args.jsonl} not found, streaming the built-in corpus", file=sys.stderr)
    try:
        t0 = time.perf_counter()
        tok = build_tokenizer(cfg, iter_texts(cfg, "train"))
        tokenizer_s = time.perf_counter() - t0
        results = []
        with tempfile.TemporaryDirectory() as shards_dir:
            make_shards(cfg, tok, shards_dir)
            for mode in ("stream", "shards"):
                c = cfg.model_copy(deep=True)
                if mode == "shards":
                    c.data.shards_dir, c.data.source = shards_dir, "shards"
                for workers in args.workers:
                    c.data.num_workers = workers
                    stream = build_stream(c, tok, "train")
                    results.append({"mode": mode, "num_workers": workers,
                                    **measure(stream, args.batches, args.warmup)})
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {
        "benchmark": "data",
        "date": datetime.date.today().isoformat(),
        "git_commit": git_commit(),
        "device": cpu_description(),
        "config": {
            "source": "files" if cfg.data.source == "files" else "builtin",
            "data_files": display_paths(cfg.data.data_files), "batch_size": cfg.data.batch_size,
            "context_length": cfg.model.context_length, "packing": cfg.data.packing,
            "shuffle_buffer_size": cfg.data.shuffle_buffer_size,
            "tokenize_batch_size": cfg.data.tokenize_batch_size,
            "tokenizer_vocab_size": tok.get_vocab_size(), "tokenizer_sha256": tokenizer_sha256(tok),
            "timed_batches": args.batches, "warmup_batches": args.warmup,
        },
        "tokenizer_train_s": round(tokenizer_s, 3),
        "results": results,
    }
    emit_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pre-tokenized token shards: written once by `diffusionlm-make-data`, read through `numpy.memmap`.

Layout of a shards directory (no timestamps anywhere, so the same input gives byte-identical files):
    meta.json              dtype, vocab size, tokenizer sha256, eos id, token/doc counts per split and shard
    tokenizer.json         the tokenizer the tokens were made with
    {split}_{i:05d}.bin    tokens, documents back to back, each ending in <eos>
    {split}_{i:05d}.idx    int64 end offset of every document in the .bin
The read path imports numpy only (GPU hosts do not carry `datasets`).
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any

import numpy as np

from diffusionlm.data.errors import DataError

FORMAT = "diffusionlm-shards-v1"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class ShardWriter:
    """Append documents of one split; a shard closes at the first document boundary past `shard_tokens`."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.out_dir, self.split, self.dtype, self.shard_tokens = out_dir, split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._docs: list[np.ndarray] = []
        self._pending = 0

    def add(self, tokens: np.ndarray) -> None:
        self._docs.append(tokens)
        self._pending += len(tokens)
        if self._pending >= self.shard_tokens:
            self._flush()

    def _flush(self) -> None:
        if not self._docs:
            return
        stem = f"{self.split}_{len(self.shards):05d}"
        tokens = np.concatenate(self._docs).astype(self.dtype)
        ends = np.cumsum([len(d) for d in self._docs], dtype=np.int64)
        tokens.tofile(self.out_dir / f"{stem}.bin")
        ends.tofile(self.out_dir / f"{stem}.idx")
        self.shards.append({"file": f"{stem}.bin", "index": f"{stem}.idx", "tokens": len(tokens),
                            "docs": len(self._docs)})
        self._docs, self._pending = [], 0

    def close(self) -> dict[str, Any]:
        self._flush()
        return {"tokens": sum(s["tokens"] for s in self.shards), "docs": sum(s["docs"] for s in self.shards),
                "shards": self.shards}


def read_meta(shards_dir: str | Path) -> dict[str, Any]:
    path = Path(shards_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"data.shards_dir={str(shards_dir)!r} holds no meta.json (write it with diffusionlm-make-data)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: unknown shard format {meta.get('format')!r} (expected {FORMAT!r})")
    return meta


class ShardSource:
    """Random access to the documents of one split of a shards directory."""

    random_access = True
    text = False

    def __init__(self, shards_dir: str | Path, split: str, tokenizer_sha256: str | None = None):
        self.dir = Path(shards_dir)
        self.meta = read_meta(self.dir)
        self.split = split
        if tokenizer_sha256 is not None and tokenizer_sha256 != self.meta["tokenizer_sha256"]:
            raise DataError(
                f"data.shards_dir={str(self.dir)!r} was tokenized with another tokenizer "
                f"(sha256 {self.meta['tokenizer_sha256'][:12]}, the run uses {tokenizer_sha256[:12]}); "
                f"use {self.dir / 'tokenizer.json'} as tokenizer.path or leave it unset"
            )
        if split not in self.meta["splits"] or not self.meta["splits"][split]["docs"]:
            raise DataError(f"data.shards_dir={str(self.dir)!r} has no {split!r} documents")
        self._shards = self.meta["splits"][split]["shards"]
        self._first_doc = np.cumsum([0] + [s["docs"] for s in self._shards], dtype=np.int64)
        self._first_doc_list = [int(x) for x in self._first_doc]  # bisect on ints beats np.searchsorted per call
        self._tokens: list[np.memmap] | None = None
        self._ends: list[np.ndarray] = []

    def _open(self) -> None:
        dtype = np.dtype(self.meta["dtype"])
        self._tokens, self._ends = [], []
        for s in self._shards:
            for name in (s["file"], s["index"]):
                if not (self.dir / name).is_file():
                    raise DataError(f"data.shards_dir={str(self.dir)!r}: shard file {name} is missing")
            # a plain ndarray view of the map: slicing a np.memmap builds a memmap object each time (~5 us)
            self._tokens.append(np.memmap(self.dir / s["file"], dtype=dtype, mode="r").view(np.ndarray))
            self._ends.append(np.fromfile(self.dir / s["index"], dtype=np.int64))

    def __len__(self) -> int:
        return int(self._first_doc[-1])

    def get(self, g: int) -> np.ndarray:
        if self._tokens is None:
            self._open()
        shard = bisect.bisect_right(self._first_doc_list, g) - 1
        local = g - self._first_doc_list[shard]
        ends = self._ends[shard]
        start = int(ends[local - 1]) if local else 0
        return np.asarray(self._tokens[shard][start : int(ends[local])], dtype=np.int64)

    def validate(self) -> None:
        self._open()

    def describe(self) -> dict[str, Any]:
        m = self.meta
        return {"source": "shards", "shards_dir": str(self.dir), "split": self.split, "dtype": m["dtype"],
                "tokens": m["splits"][self.split]["tokens"], "docs": m["splits"][self.split]["docs"],
                "tokenizer_sha256": m["tokenizer_sha256"], "made_from": m.get("source")}

"""Pre-tokenized token shards: written once by `diffusionlm-make-data`, read through `numpy.memmap`.

Layout of a shards directory (no timestamps anywhere, so the same input gives byte-identical files):
    meta.json              dtype, vocab size, tokenizer sha256, eos id, token/doc counts per split and shard,
                           and the sha256 of every shard file (`file_sha256`, `index_sha256`; absent in
                           directories made before checksums existed, which still load without that check)
    tokenizer.json         the tokenizer the tokens were made with
    {split}_{i:05d}.bin    tokens, documents back to back, each ending in <eos>
    {split}_{i:05d}.idx    int64 end offset of every document in the .bin
    .verified.json         written by readers, not by make-data: which files passed the content check (below)

Opening a source checks the whole directory against meta.json before any batch is read (`verify_shards`),
so a damaged set fails at start with a `DataError` naming the file, never mid-run or as garbage batches:
  * meta.json: valid JSON, every required key with the right type, shard counts adding up to the split totals;
  * every shard file of every split (validation data too): present, sizes matching the token/doc counts and
    dtype, end offsets starting > 0, never decreasing, and ending exactly at the shard's token count;
  * content, once per file version: sha256 against meta.json, token ids inside the vocabulary, <eos> at the
    end of every document.
The read path imports numpy only (GPU hosts do not carry `datasets`), and `get` does no checking.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from diffusionlm.data.errors import DataError

FORMAT = "diffusionlm-shards-v1"
CHECKSUM = "sha256"
VERIFIED_SIDECAR = ".verified.json"
_HASH_CHUNK = 8 * 2**20  # a multiple of every token itemsize
_REMAKE = "remake the shards with diffusionlm-make-data --overwrite"


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
        tokens = np.ascontiguousarray(np.concatenate(self._docs).astype(self.dtype))
        ends = np.cumsum([len(d) for d in self._docs], dtype=np.int64)
        tokens.tofile(self.out_dir / f"{stem}.bin")
        ends.tofile(self.out_dir / f"{stem}.idx")
        # hashed from memory: the exact bytes just written, without reading the files back
        self.shards.append({"file": f"{stem}.bin", "index": f"{stem}.idx", "tokens": len(tokens),
                            "docs": len(self._docs), "file_sha256": hashlib.sha256(tokens.data).hexdigest(),
                            "index_sha256": hashlib.sha256(ends.data).hexdigest()})
        self._docs, self._pending = [], 0

    def close(self) -> dict[str, Any]:
        self._flush()
        return {"tokens": sum(s["tokens"] for s in self.shards), "docs": sum(s["docs"] for s in self.shards),
                "shards": self.shards}


# ----- meta.json


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def read_meta(shards_dir: str | Path) -> dict[str, Any]:
    """Parse meta.json and check it is complete and adds up; any problem is a `DataError` naming it."""
    path = Path(shards_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"data.shards_dir={str(shards_dir)!r} holds no meta.json (write it with diffusionlm-make-data)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); {_REMAKE}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); {_REMAKE}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(meta).__name__}; {_REMAKE}")
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: unknown shard format {meta.get('format')!r} (expected {FORMAT!r})")

    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}; {_REMAKE}")

    missing = [k for k in ("dtype", "vocab_size", "eos_token_id", "tokenizer_sha256", "splits") if k not in meta]
    if missing:
        raise bad(f"missing required key(s) {', '.join(missing)}")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise bad(f"dtype {meta['dtype']!r} is not 'uint16' or 'uint32'")
    vocab, eos = meta["vocab_size"], meta["eos_token_id"]
    if not _is_int(vocab) or vocab <= 0:
        raise bad(f"vocab_size {vocab!r} is not a positive integer")
    if vocab - 1 > np.iinfo(np.dtype(meta["dtype"])).max:
        raise bad(f"vocab_size {vocab} does not fit dtype {meta['dtype']}")
    if not _is_int(eos) or not 0 <= eos < vocab:
        raise bad(f"eos_token_id {eos!r} is not a token id below vocab_size {vocab}")
    if not isinstance(meta["tokenizer_sha256"], str):
        raise bad("tokenizer_sha256 is not a string")
    if not isinstance(meta["splits"], dict):
        raise bad("splits is not an object")
    for split, info in meta["splits"].items():
        where = f"splits.{split}"
        if not isinstance(info, dict):
            raise bad(f"{where} is not an object")
        missing = [k for k in ("tokens", "docs", "shards") if k not in info]
        if missing:
            raise bad(f"{where} lacks required key(s) {', '.join(missing)}")
        if not isinstance(info["shards"], list):
            raise bad(f"{where}.shards is not a list")
        for i, s in enumerate(info["shards"]):
            here = f"{where}.shards[{i}]"
            if not isinstance(s, dict):
                raise bad(f"{here} is not an object")
            missing = [k for k in ("file", "index", "tokens", "docs") if k not in s]
            if missing:
                raise bad(f"{here} lacks required key(s) {', '.join(missing)}")
            for key in ("file", "index"):
                name = s[key]
                if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
                    raise bad(f"{here}.{key} {name!r} is not a file name inside the shards directory")
            for key in ("tokens", "docs"):
                if not _is_int(s[key]) or s[key] <= 0:
                    raise bad(f"{here}.{key} {s[key]!r} is not a positive integer")
            for key in ("file_sha256", "index_sha256"):
                if key in s and not _is_sha256(s[key]):
                    raise bad(f"{here}.{key} {s[key]!r} is not a sha256 hex digest")
        for key in ("tokens", "docs"):
            total = sum(s[key] for s in info["shards"])
            if info[key] != total:
                raise bad(f"{where}.{key} is {info[key]!r} but its shards hold {total}")
    return meta


# ----- checking the files against meta.json

# Directories (by the identity of meta.json and every shard file) already verified in this process: the trainer
# opens a fresh validation stream at every evaluation, and the checks need not run again for unchanged files.
_VERIFIED_DIRS: set[tuple] = set()


def _file_id(st: os.stat_result) -> str:
    # size + mtime_ns + inode: any write through the filesystem changes mtime; a copy (even `cp -a`, `rsync -a`,
    # which keep mtime) gets a new inode, so a copied directory is verified again.
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def verify_shards(shards_dir: str | Path, meta: dict[str, Any]) -> None:
    """Check every shard of every split against `meta` (from `read_meta`); raise `DataError` at the first fault.

    Structure (sizes and end offsets) is checked at the first open in each process: it reads only the .idx
    files (8 bytes a document). The content check (checksums, token range, <eos> at document ends) reads every
    byte, so it runs once per file version: a file that passed is recorded in `.verified.json` beside the
    shards, keyed by size, mtime_ns and inode (plus the expected checksum and what the check depended on), and
    later processes and runs skip unchanged files. Within a process, a directory whose files are unchanged is
    not checked again (the trainer reopens validation data at every evaluation); DataLoader workers inherit
    the opened source and check nothing. sha256 rather than blake2b: with SHA-NI it hashes ~1.4 GB/s here,
    blake2b ~0.6 GB/s. Measured: ~0.15 s for a 100M-token (200 MB) uint16 shard on first open, 4 ms on a later
    open (index structure only), ~1 ms for a 1.6 MB TinyStories shard; a 10B-token set costs ~15 s once.
    A read-only directory keeps no record and repeats the content check once per process.
    The catch: bytes that rot on disk without changing size, mtime or inode are not seen after the first check.
    """
    root = Path(shards_dir)
    dtype = np.dtype(meta["dtype"])
    vocab, eos = meta["vocab_size"], meta["eos_token_id"]
    shards = [s for info in meta["splits"].values() for s in info["shards"]]
    ids: dict[str, str] = {}
    for s in shards:  # presence and sizes first: cheap, and the most common damage (truncation, lost files)
        for key, itemsize, count, unit in (("file", dtype.itemsize, s["tokens"], f"{dtype.name} tokens"),
                                          ("index", 8, s["docs"], "int64 document end offsets")):
            p = root / s[key]
            try:
                st = p.stat()
            except FileNotFoundError:
                raise DataError(f"{p}: shard file is missing (listed in {root / 'meta.json'}); {_REMAKE}") from None
            if not p.is_file():
                raise DataError(f"{p}: shard file is not a regular file")
            if st.st_size % itemsize:
                raise DataError(f"{p}: {st.st_size} bytes is not a whole number of {unit} ({itemsize} bytes each); "
                                f"the file is truncated or corrupt; {_REMAKE}")
            if st.st_size != count * itemsize:
                raise DataError(f"{p}: holds {st.st_size // itemsize} {unit} ({st.st_size} bytes), meta.json says "
                                f"{count} ({count * itemsize} bytes); the file is truncated or corrupt; {_REMAKE}")
            ids[s[key]] = _file_id(st)
    meta_path = root / "meta.json"
    dir_key = (str(root.resolve()), _file_id(meta_path.stat()), tuple(sorted(ids.items())))
    if dir_key in _VERIFIED_DIRS:
        return
    ends_of = {s["index"]: _check_index(root / s["index"], s["tokens"]) for s in shards}

    sidecar = _read_sidecar(root)
    newly: dict[str, str] = {}
    for s in shards:
        idx_key = f"{ids[s['index']]}|{s.get('index_sha256')}"
        if sidecar.get(s["index"]) != idx_key:
            if "index_sha256" in s:
                _check_sha256(root / s["index"], s["index_sha256"])
            newly[s["index"]] = idx_key
        bin_key = f"{ids[s['file']]}|{s.get('file_sha256')}|{idx_key}|{vocab}|{eos}"
        if sidecar.get(s["file"]) != bin_key:
            _check_tokens(root / s["file"], dtype, s.get("file_sha256"), ends_of[s["index"]], vocab, eos)
            newly[s["file"]] = bin_key
    if newly:
        _write_sidecar(root, {**sidecar, **newly})
    _VERIFIED_DIRS.add(dir_key)


def _check_index(p: Path, tokens: int) -> np.ndarray:
    ends = np.fromfile(p, dtype=np.int64)
    if ends[0] <= 0:
        raise DataError(f"{p}: the first document ends at offset {ends[0]}, which must be > 0; "
                        f"the index is corrupt; {_REMAKE}")
    drops = np.flatnonzero(np.diff(ends) < 0)
    if len(drops):
        i = int(drops[0]) + 1
        raise DataError(f"{p}: document end offsets decrease at document {i} ({ends[i - 1]} then {ends[i]}); "
                        f"the index is corrupt; {_REMAKE}")
    if ends[-1] != tokens:
        raise DataError(f"{p}: the last document ends at offset {ends[-1]}, but the shard holds {tokens} tokens; "
                        f"the index is corrupt; {_REMAKE}")
    return ends


def _check_sha256(p: Path, want: str) -> None:
    h = hashlib.sha256()
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    with open(p, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    _compare(p, h.hexdigest(), want)


def _check_tokens(p: Path, dtype: np.dtype, want: str | None, ends: np.ndarray, vocab: int, eos: int) -> None:
    """One chunked pass: sha256 (when meta.json has one) and the largest token id; then <eos> at every end."""
    h = hashlib.sha256() if want is not None else None
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    top = 0
    with open(p, "rb") as f:
        while n := f.readinto(buf):
            if h is not None:
                h.update(view[:n])
            top = max(top, int(np.frombuffer(buf, dtype=dtype, count=n // dtype.itemsize).max()))
    if h is not None:
        _compare(p, h.hexdigest(), want)
    if top >= vocab:
        raise DataError(f"{p}: holds token id {top}, outside the vocabulary of {vocab} in meta.json; "
                        f"the file is corrupt; {_REMAKE}")
    last = np.memmap(p, dtype=dtype, mode="r")[ends - 1]
    wrong = np.flatnonzero(last != eos)
    if len(wrong):
        i = int(wrong[0])
        raise DataError(f"{p}: document {i} ends with token {last[i]}, not <eos> (id {eos}); "
                        f"the file or its index is corrupt; {_REMAKE}")


def _compare(p: Path, got: str, want: str | None) -> None:
    if want is not None and got != want:
        raise DataError(f"{p}: sha256 {got[:16]}... does not match {want[:16]}... in meta.json; "
                        f"the file is corrupt; {_REMAKE}")


def _read_sidecar(root: Path) -> dict[str, str]:
    try:
        data = json.loads((root / VERIFIED_SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or damaged: verify everything again
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, str)} if isinstance(files, dict) else {}


def _write_sidecar(root: Path, files: dict[str, str]) -> None:
    """Best effort and atomic (ranks may write at once); a read-only directory just keeps no record."""
    try:
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f"{VERIFIED_SIDECAR}.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"files": dict(sorted(files.items()))}, f, indent=1)
            f.write("\n")
        os.replace(tmp, root / VERIFIED_SIDECAR)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


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
        self._tokens: list[np.ndarray] | None = None
        self._ends: list[np.ndarray] = []

    def _open(self) -> None:
        dtype = np.dtype(self.meta["dtype"])
        tokens, ends = [], []
        for s in self._shards:
            # a plain ndarray view of the map: slicing a np.memmap builds a memmap object each time (~5 us)
            tokens.append(np.memmap(self.dir / s["file"], dtype=dtype, mode="r").view(np.ndarray))
            ends.append(np.fromfile(self.dir / s["index"], dtype=np.int64))
        self._tokens, self._ends = tokens, ends

    def __len__(self) -> int:
        return int(self._first_doc[-1])

    def get(self, g: int) -> np.ndarray:
        if self._tokens is None:
            self.validate()
        shard = bisect.bisect_right(self._first_doc_list, g) - 1
        local = g - self._first_doc_list[shard]
        ends = self._ends[shard]
        start = int(ends[local - 1]) if local else 0
        return np.asarray(self._tokens[shard][start : int(ends[local])], dtype=np.int64)

    def validate(self) -> None:
        """Check the whole directory (see `verify_shards`), then map this split; DataLoader workers inherit it."""
        verify_shards(self.dir, self.meta)
        self._open()

    def describe(self) -> dict[str, Any]:
        m = self.meta
        return {"source": "shards", "shards_dir": str(self.dir), "split": self.split, "dtype": m["dtype"],
                "tokens": m["splits"][self.split]["tokens"], "docs": m["splits"][self.split]["docs"],
                "tokenizer_sha256": m["tokenizer_sha256"], "made_from": m.get("source"),
                "checksums": all("file_sha256" in s and "index_sha256" in s for s in self._shards)}

"""File manifests: each file of a directory with its size and checksum, and the check against them.

Checkpoints end with one (diffusionlm/training/checkpoint.py writes it); training verifies every file on resume
and inference the files it reads, through `file_problems` here, so both say the same about the same damage.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
HASH = "sha256"
_CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str = HASH) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digests(paths: list[Path], algorithm: str = HASH) -> list[str]:
    """Checksums of several files at once (hashlib releases the GIL on large buffers)."""
    if len(paths) <= 1:
        return [file_digest(p, algorithm) for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda p: file_digest(p, algorithm), paths))


def read_manifest(directory: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str]:
    """(the manifest, its file entries, its hash algorithm); ValueError saying why it cannot be read."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files: dict[str, dict[str, Any]] = manifest["files"]
        algorithm = manifest.get("hash", HASH)
        hashlib.new(algorithm)
        if not all(isinstance(e, dict) for e in files.values()):
            raise TypeError("a file entry is not a table")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"manifest.json is unreadable ({type(e).__name__}: {e})") from None
    return manifest, files, algorithm


def file_problems(directory: Path, files: dict[str, dict[str, Any]], algorithm: str, names: Iterable[str],
                  ) -> list[str]:
    """What is wrong with the files `names` of `directory` against the manifest entries `files`: not listed,
    missing, of another size, or of another checksum (hashed only where the size matches)."""
    problems, to_hash = [], []
    for name in names:
        entry, path = files.get(name), directory / name
        if entry is None:
            problems.append(f"{name} is not in manifest.json")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif (size := path.stat().st_size) != entry.get("size"):
            how = "truncated" if isinstance(entry.get("size"), int) and size < entry["size"] else "the wrong size"
            problems.append(f"{name} is {how}: {size} bytes, manifest.json says {entry.get('size')}")
        else:
            to_hash.append(name)
    found = digests([directory / n for n in to_hash], algorithm)
    return problems + [f"{n} does not match its {algorithm} in manifest.json (corrupted or modified)"
                       for n, d in zip(to_hash, found) if d != files[n].get(algorithm)]

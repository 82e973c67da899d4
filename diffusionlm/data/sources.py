"""Raw document sources: the built-in stories, Hub datasets, local files and pre-tokenized shards.

A source either has random access (`random_access = True`: `len()` and `get(g)`, so a reader jumps
straight to its own documents) or is a stream (`iter_from(g)` yields `(g, raw)` from global index g on).
`raw` is whatever the row held (text, a non-string, MISSING, INVALID); cleaning happens downstream
so that every bad row is counted the same way. Sources open lazily, once per process that reads them.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusionlm.data.builtin_corpus import generate_story
from diffusionlm.data.errors import DataError

if TYPE_CHECKING:
    from config.schema import DataConfig

MISSING = object()  # the row has no `text_field`
INVALID = object()  # the row could not be decoded (bad UTF-8, broken JSON line)
REPLACEMENT_CHAR = "\ufffd"  # what invalid UTF-8 turns into when `datasets` decodes with errors="replace"

_EXT_FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".txt": "text", ".text": "text"}


class BuiltinSource:
    random_access = True
    text = True

    def __init__(self, cfg: DataConfig):
        self.seed, self.n = cfg.builtin_seed, cfg.builtin_num_stories

    def __len__(self) -> int:
        return self.n

    def get(self, g: int) -> str:
        return generate_story(self.seed, g)

    def validate(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"source": "builtin", "builtin_seed": self.seed, "builtin_num_stories": self.n}


class HubSource:
    """`datasets.load_dataset(..., streaming=True)`; offline when HF_DATASETS_OFFLINE=1 and cached."""

    random_access = False
    text = True

    def __init__(self, cfg: DataConfig, hf_split: str):
        self.cfg, self.hf_split = cfg, hf_split

    def _open(self):
        import datasets

        c = self.cfg
        try:
            return datasets.load_dataset(
                c.dataset_name, c.dataset_config, split=self.hf_split, streaming=True, revision=c.revision
            )
        except Exception as e:  # datasets raises many types (not found, offline, bad config); all fatal here
            raise DataError(
                f"cannot open hub dataset data.dataset_name={c.dataset_name!r} "
                f"(data.dataset_config={c.dataset_config!r}, split={self.hf_split!r}, "
                f"data.revision={c.revision!r}): {type(e).__name__}: {e}"
            ) from None

    def validate(self) -> None:
        _check_text_field(iter(self._open()), self.cfg.text_field, f"data.dataset_name={self.cfg.dataset_name!r}")

    def iter_from(self, start: int) -> Iterator[tuple[int, Any]]:
        ds = self._open()
        if start:
            ds = ds.skip(start)
        field = self.cfg.text_field
        for g, row in enumerate(ds, start):
            yield g, row.get(field, MISSING)

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {"source": "hub", "dataset_name": c.dataset_name, "dataset_config": c.dataset_config,
                "hf_split": self.hf_split, "revision": c.revision, "text_field": c.text_field}


def _check_text_field(rows: Iterator[Any], field: str, where: str, peek: int = 100) -> None:
    """Fail at start when none of the first rows has the configured text field (a typo, not bad rows)."""
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if i >= peek:
            break
        if isinstance(row, dict):
            if field in row:
                return
            seen.update(row)
    if seen:
        raise DataError(
            f"data.text_field={field!r} not found in {where}; the rows have fields: {', '.join(sorted(seen))}"
        )
    # no readable row at all: nothing to check against; an empty source is reported when streaming


def resolve_files(cfg: DataConfig) -> tuple[list[Path], str]:
    """Expand globs, check existence and pick the format (from the extension unless set)."""
    files: list[Path] = []
    for pattern in cfg.data_files:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise DataError(f"data.data_files: no file matches {pattern!r}")
        for m in matches:
            if not Path(m).is_file():
                raise DataError(f"data.data_files: file not found: {m}")
            files.append(Path(m))
    fmt = cfg.file_format
    if fmt == "auto":
        found = {_EXT_FORMATS.get(f.suffix.lower()) for f in files}
        if None in found:
            bad = [str(f) for f in files if f.suffix.lower() not in _EXT_FORMATS]
            raise DataError(f"data.file_format='auto' cannot tell the format of {bad}; set data.file_format")
        if len(found) > 1:
            raise DataError(f"data.data_files mixes formats {sorted(found)}; use one format per run")
        fmt = found.pop()
    return files, fmt


class FileSource:
    """Local files. Parquet, JSON arrays and text go through `datasets` streaming; JSON Lines are read
    line by line here because pyarrow's reader aborts the whole file on one bad byte or one row whose
    field has another type, and the pipeline must skip and count such rows instead."""

    random_access = False
    text = True

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.files, self.format = resolve_files(cfg)

    def _field(self) -> str:
        return "text" if self.format == "text" else self.cfg.text_field

    def _rows(self, start: int = 0) -> Iterator[Any]:
        if self.format == "jsonl":
            yield from _jsonl_rows(self.files, start)
            return
        import datasets

        kwargs: dict[str, Any] = {"encoding_errors": "replace"} if self.format == "text" else {}
        try:
            ds = datasets.load_dataset(
                self.format, data_files=[str(f) for f in self.files], split="train", streaming=True, **kwargs
            )
        except Exception as e:
            raise DataError(f"cannot read data.data_files={self.cfg.data_files} as {self.format}: {e}") from None
        yield from (ds.skip(start) if start else ds)

    def validate(self) -> None:
        if self.format != "text":
            _check_text_field(self._rows(), self._field(), f"data.data_files={self.cfg.data_files}")

    def iter_from(self, start: int) -> Iterator[tuple[int, Any]]:
        field, is_text = self._field(), self.format == "text"
        for g, row in enumerate(self._rows(start), start):
            if not isinstance(row, dict):
                yield g, MISSING
                continue
            value = row.get(field, MISSING)
            if is_text and isinstance(value, str) and REPLACEMENT_CHAR in value:
                value = INVALID  # the line held invalid UTF-8
            yield g, value

    def describe(self) -> dict[str, Any]:
        return {"source": "files", "files": [str(f) for f in self.files], "format": self.format,
                "text_field": self._field()}


def _jsonl_rows(files: list[Path], start: int) -> Iterator[Any]:
    g = 0
    for path in files:
        with open(path, "rb") as f:
            for line in f:
                if g >= start:
                    try:
                        yield json.loads(line.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        yield INVALID
                g += 1

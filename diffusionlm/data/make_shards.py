"""Tokenize a configured source once into token shards (see `shards.py` for the layout)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusionlm.data.build import open_source
from diffusionlm.data.documents import text_to_encoder, token_docs
from diffusionlm.data.errors import DataError
from diffusionlm.data.selection import Selection
from diffusionlm.data.shards import FORMAT, VERIFIED_SIDECAR, ShardWriter, token_dtype

if TYPE_CHECKING:
    from config.schema import Config


def _ours(name: str) -> bool:
    """A name make-data writes (or a shard reader adds): the only things `overwrite` may replace."""
    return (name in ("meta.json", "meta.json.tmp", "tokenizer.json", VERIFIED_SIDECAR)
            or name.endswith((".bin", ".idx")) or (name.startswith(f"{VERIFIED_SIDECAR}.") and name.endswith(".tmp")))


def check_output_dir(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse an output that is not a directory, or not empty, unless `overwrite` and it holds only shard files.

    Even with `overwrite`, a directory holding anything make-data did not write (a run directory: config.toml,
    checkpoints/, ... beside its tokenizer.json) is refused: replacing its tokenizer.json would break that run.
    Nothing is touched here.
    """
    out = Path(out_dir)
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"--output {str(out)!r} exists and is not a directory")
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if not overwrite:
        raise DataError(f"--output directory {str(out)!r} is not empty (it holds {shown}); "
                        "choose an empty directory, or pass --overwrite to replace the shards in it")
    foreign = [n for n in names if not _ours(n) or not (out / n).is_file()]
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise DataError(f"--output directory {str(out)!r} holds files diffusionlm-make-data did not write "
                        f"({listed}); it is not a shards directory (a run directory?), so it is not overwritten "
                        "even with --overwrite: choose another directory")


def make_shards(
    cfg: Config, tokenizer: Any, out_dir: str | Path, shard_tokens: int = 100_000_000, show_progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write train and val shards, `tokenizer.json` and `meta.json` into `out_dir`; return the meta.

    `out_dir` must be empty or absent; with `overwrite`, a directory of earlier shards is replaced.
    """
    from diffusionlm.tokenizer import save_tokenizer, tokenizer_sha256

    if cfg.data.source == "shards":
        raise DataError("data.source is already 'shards'; point diffusionlm-make-data at a text source")
    if shard_tokens <= 0:
        raise DataError(f"--shard-tokens must be positive, got {shard_tokens}")
    check_output_dir(out_dir, overwrite)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A rerun must not leave shards of the last one; meta.json goes first, so that a run cut short leaves a
    # directory that no reader takes for a complete set.
    for stale in [out / "meta.json", out / VERIFIED_SIDECAR, *out.glob("*.bin"), *out.glob("*.idx")]:
        stale.unlink(missing_ok=True)
    vocab = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab)
    encoder = text_to_encoder(tokenizer)
    d = cfg.data
    splits: dict[str, Any] = {}
    description: dict[str, Any] = {}
    for split in ("train", "val"):
        source, holdout = open_source(cfg, split)
        source.validate()
        description = source.describe()
        writer = ShardWriter(out, split, dtype, shard_tokens)
        skipped = truncated = 0
        events = token_docs(
            source, Selection(split, holdout, d.val_every, 0, 1), 0, encoder,
            cfg.model.eos_token_id, d.max_doc_chars, d.tokenize_batch_size,
        )
        for _, tokens, was_truncated in _progress(events, f"tokenizing {split}", show_progress):
            if tokens is None:
                skipped += 1
                continue
            truncated += was_truncated
            writer.add(tokens)
        splits[split] = {**writer.close(), "skipped_rows": skipped, "truncated_rows": truncated}
        if not splits[split]["docs"]:
            raise DataError(f"the configured source gave no usable {split!r} documents")
    save_tokenizer(tokenizer, out / "tokenizer.json")
    meta = {
        "format": FORMAT, "dtype": dtype.name, "vocab_size": vocab, "eos_token_id": cfg.model.eos_token_id,
        "tokenizer_sha256": tokenizer_sha256(tokenizer), "source": description,
        "holdout_val_every": d.val_every, "splits": splits,
    }
    tmp = out / "meta.json.tmp"  # written last and atomically: its presence means the set is complete
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / "meta.json")
    return meta


def _progress(events: Any, label: str, show: bool) -> Any:
    if not show:
        yield from events
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}: {task.completed} docs"),
                  TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task(label)
        for i, event in enumerate(events):
            if i % 1000 == 0:
                bar.update(task, completed=i)
            yield event

"""Tokenize a configured source once into token shards (see `shards.py` for the layout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusionlm.data.build import open_source
from diffusionlm.data.documents import text_to_encoder, token_docs
from diffusionlm.data.errors import DataError
from diffusionlm.data.selection import Selection
from diffusionlm.data.shards import FORMAT, ShardWriter, token_dtype

if TYPE_CHECKING:
    from config.schema import Config


def make_shards(
    cfg: Config, tokenizer: Any, out_dir: str | Path, shard_tokens: int = 100_000_000, show_progress: bool = False
) -> dict[str, Any]:
    """Write train and val shards, `tokenizer.json` and `meta.json` into `out_dir`; return the meta."""
    from diffusionlm.tokenizer import save_tokenizer, tokenizer_sha256

    if cfg.data.source == "shards":
        raise DataError("data.source is already 'shards'; point diffusionlm-make-data at a text source")
    if shard_tokens <= 0:
        raise DataError(f"--shard-tokens must be positive, got {shard_tokens}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.bin"), *out.glob("*.idx")]:  # a rerun must not leave shards of the last one
        stale.unlink()
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
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
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

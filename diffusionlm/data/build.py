"""Turn a Config into sources and streams (the only place that reads `cfg.data`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import torch

from diffusionlm.data.documents import clean_text, owned_rows, text_to_encoder
from diffusionlm.data.errors import DataError
from diffusionlm.data.producer import BatchSpec
from diffusionlm.data.selection import Selection
from diffusionlm.data.stream import TokenStream

if TYPE_CHECKING:
    from config.schema import Config


def open_source(cfg: Config, split: str, tokenizer_sha256: str | None = None) -> tuple[Any, bool]:
    """(source, holdout): holdout means validation is every `val_every`-th document of the stream."""
    d = cfg.data
    if split not in ("train", "val"):
        raise DataError(f"split must be 'train' or 'val', not {split!r}")
    if d.source == "builtin":
        from diffusionlm.data.sources import BuiltinSource

        return BuiltinSource(d), True
    if d.source == "hub":
        from diffusionlm.data.sources import HubSource

        if d.val_split:
            return HubSource(d, d.train_split if split == "train" else d.val_split), False
        return HubSource(d, d.train_split), True
    if d.source == "files":
        from diffusionlm.data.sources import FileSource

        return FileSource(d), True
    from diffusionlm.data.shards import ShardSource

    return ShardSource(d.shards_dir, split, tokenizer_sha256), False


def build_stream(
    cfg: Config, tokenizer: Any, split: Literal["train", "val"], rank: int = 0, world_size: int = 1
) -> TokenStream:
    """Open and check the source now (bad settings fail here, not mid-run), then stream lazily."""
    from diffusionlm.tokenizer import check_tokenizer, tokenizer_sha256

    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside world_size {world_size}")
    check_tokenizer(tokenizer, cfg.model)
    d, m = cfg.data, cfg.model
    source, holdout = open_source(cfg, split, tokenizer_sha256(tokenizer) if cfg.data.source == "shards" else None)
    source.validate()
    train = split == "train"
    spec = BatchSpec(
        batch_size=d.batch_size, context_length=m.context_length, packing=d.packing,
        # validation is deterministic and sees whole rows: no shuffling, no random truncation
        random_trunc_prob=d.random_trunc_prob if train else 0.0,
        shuffle_buffer_size=d.shuffle_buffer_size if train else 0,
        shuffle_seed=d.shuffle_seed, pad_id=m.pad_token_id, eos_id=m.eos_token_id,
        max_doc_chars=d.max_doc_chars, tokenize_batch_size=d.tokenize_batch_size,
    )
    num_workers = d.num_workers if train else 0
    description = {
        **source.describe(), "split": split, "packing": d.packing, "batch_size": d.batch_size,
        "context_length": m.context_length, "shuffle_buffer_size": spec.shuffle_buffer_size,
        "shuffle_seed": d.shuffle_seed, "random_trunc_prob": spec.random_trunc_prob,
        "num_workers": num_workers, "rank": rank, "world_size": world_size,
        "holdout_val_every": d.val_every if holdout else None,
        "tokenizer_vocab_size": tokenizer.get_vocab_size(),
    }
    return TokenStream(
        source, spec, split, holdout, d.val_every, rank, world_size, num_workers,
        encoder=text_to_encoder(tokenizer) if source.text else None,
        pin_memory=d.pin_memory and torch.cuda.is_available(), description=description,
    )


def iter_texts(cfg: Config, split: str = "train") -> Iterator[str]:
    """One pass over the cleaned raw documents of a split (what tokenizers are trained on)."""
    if cfg.data.source == "shards":
        raise DataError("data.source = 'shards' holds tokens, not text; train the tokenizer on the original source")
    source, holdout = open_source(cfg, split)
    source.validate()
    sel = Selection(split, holdout, cfg.data.val_every, 0, 1)
    for _, raw in owned_rows(source, sel, 0):
        text, _ = clean_text(raw, cfg.data.max_doc_chars)
        if text is not None:
            yield text

"""Resolve the tokenizer a run uses: the configured file, the one stored beside shards, or train one."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from diffusionlm.tokenizer.bpe import TokenizerError, check_tokenizer, load_tokenizer, train_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from config.schema import Config


def build_tokenizer(cfg: Config, texts: Iterable[str] | None = None, show_progress: bool = False) -> Tokenizer:
    """Load `tokenizer.path`; for shards the tokenizer.json beside them; else train on the first
    `tokenizer.train_docs` of `texts` (lazily read: the source's training documents, e.g.
    `diffusionlm.data.iter_texts(cfg)`). Always checked against the model."""
    if cfg.tokenizer.path is not None:
        tok = load_tokenizer(cfg.tokenizer.path)
    elif cfg.data.source == "shards":
        tok = load_tokenizer(Path(cfg.data.shards_dir) / "tokenizer.json")
    elif texts is None:
        raise TokenizerError("no tokenizer.path and no texts to train one on")
    else:
        docs = itertools.islice(texts, cfg.tokenizer.train_docs)
        tok = train_tokenizer(docs, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency, show_progress)
    check_tokenizer(tok, cfg.model)
    return tok

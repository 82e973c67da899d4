"""From raw rows to token documents: clean (skip / truncate, counted), tokenize in batches, add <eos>.

`token_docs` yields one event per owned row, `(pos_after, tokens_or_None, truncated)`, so the consumer
updates its counters and its resume position at exactly the row it has consumed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from diffusionlm.data.selection import Selection
from diffusionlm.data.sources import INVALID, MISSING

Event = tuple[int, np.ndarray | None, bool]


def clean_text(raw: Any, max_chars: int) -> tuple[str | None, bool]:
    """(text, truncated); text is None when the row must be skipped."""
    if raw is MISSING or raw is INVALID or not isinstance(raw, str) or not raw.strip():
        return None, False
    if len(raw) > max_chars:
        return raw[:max_chars], True
    return raw, False


def owned_indices(source: Any, sel: Selection, pos: int) -> Iterator[tuple[int, int]]:
    """(pos_after, global index) of the documents a reader owns in a random-access source, from `pos` on."""
    n = len(source)
    for j in itertools.count(pos):
        g = sel.nth(j)
        if g >= n:
            return
        yield j + 1, g


def owned_rows(source: Any, sel: Selection, pos: int) -> Iterator[tuple[int, Any]]:
    """(pos_after, raw) for the rows this reader owns, starting at resume position `pos`.

    Random-access sources count `pos` in owned documents; streams count it in global rows.
    """
    if source.random_access:
        for p, g in owned_indices(source, sel, pos):
            yield p, source.get(g)
    else:
        for g, raw in source.iter_from(pos):
            if sel.owns(g):
                yield g + 1, raw


def text_to_encoder(tokenizer: Any) -> Any:
    """A copy that encodes "<mask>", "<eos>"... in raw text as plain characters, never as special ids."""
    from tokenizers import Tokenizer

    enc = Tokenizer.from_str(tokenizer.to_str())
    enc.encode_special_tokens = True
    return enc


def token_docs(
    source: Any, sel: Selection, pos: int, encoder: Any, eos_id: int, max_chars: int, batch_docs: int
) -> Iterator[Event]:
    rows = owned_rows(source, sel, pos)
    if not source.text:  # shards: already tokenized, <eos> included
        for p, tokens in rows:
            yield p, tokens, False
        return
    while True:
        chunk = list(itertools.islice(rows, batch_docs))
        if not chunk:
            return
        cleaned = [clean_text(raw, max_chars) for _, raw in chunk]
        texts = [t for t, _ in cleaned if t is not None]
        encoded = iter(encoder.encode_batch(texts, add_special_tokens=False)) if texts else iter(())
        for (p, _), (text, truncated) in zip(chunk, cleaned):
            if text is None:
                yield p, None, False
                continue
            ids = np.asarray(next(encoded).ids, dtype=np.int64)
            yield p, np.append(ids, eos_id), truncated

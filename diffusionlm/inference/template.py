"""What to generate: a prompt continued to a total length, or an infilling template with masked spans anywhere.

Template syntax: text with markers `[MASK:n]` (n masked positions, n >= 1) or `[MASK]` (one), e.g.
`"Once upon a time [MASK:20] The end."`. The text pieces are tokenized one by one and joined with the `<mask>`
ids; whitespace just before a marker is dropped (it belongs to the generated text: byte-level BPE attaches a
space to the word after it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

MARKER = re.compile(r"\[MASK(?::([^\]\[]*))?\]")


class TemplateError(ValueError):
    """A prompt or template that cannot be generated from; the message is meant for the user."""


def parse_template(text: str, encode: Callable[[str], Sequence[int]], mask_token_id: int) -> list[int]:
    """Token ids of `text` with each marker expanded to its `<mask>` ids. `encode` turns plain text into ids
    (it must not produce `<mask>` itself: the CLI encodes special-token strings as plain characters)."""
    ids: list[int] = []
    pos = 0
    for m in MARKER.finditer(text):
        count = 1 if m.group(1) is None else _span_length(m.group(0), m.group(1), m.start())
        _check_plain(text[pos:m.start()], pos)
        ids += _encode(text[pos:m.start()].rstrip(), encode, mask_token_id)
        ids += [mask_token_id] * count
        pos = m.end()
    _check_plain(text[pos:], pos)
    ids += _encode(text[pos:], encode, mask_token_id)
    return ids


def prompt_template(prompt_ids: Sequence[int], total_length: int, mask_token_id: int) -> list[int]:
    """The template `<prompt>[MASK:n]` with n = total_length - len(prompt_ids)."""
    n = total_length - len(prompt_ids)
    if n <= 0:
        raise TemplateError(f"the prompt has {len(prompt_ids)} tokens, leaving no room to generate within "
                            f"total_length={total_length}")
    return [*prompt_ids, *([mask_token_id] * n)]


def has_marker(text: str) -> bool:
    """Whether `text` asks for infilling (contains `[MASK`)."""
    return "[MASK" in text


def _span_length(marker: str, raw: str, at: int) -> int:
    if not raw.strip().isdigit() or int(raw) < 1:
        raise TemplateError(f"malformed mask marker {marker!r} at character {at}: expected [MASK:n] with n a "
                            "positive integer, or [MASK] for one position")
    return int(raw)


def _check_plain(piece: str, offset: int) -> None:
    i = piece.find("[MASK")
    if i >= 0:
        end = piece.find("]", i)
        shown = piece[i:end + 1] if end >= 0 else piece[i:i + 12]
        raise TemplateError(f"malformed mask marker {shown!r} at character {offset + i}: expected [MASK:n] with "
                            "n a positive integer, or [MASK] for one position")


def _encode(piece: str, encode: Callable[[str], Sequence[int]], mask_token_id: int) -> list[int]:
    if not piece:
        return []
    ids = list(encode(piece))
    if mask_token_id in ids:
        raise TemplateError(f"the text {piece!r} encodes to the <mask> id; mark masked spans with [MASK:n]")
    return ids

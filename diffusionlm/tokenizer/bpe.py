"""Train, load, save and validate byte-level BPE tokenizers.

Byte-level pre-tokenization with no normalizer means every Unicode string maps to bytes and back
losslessly, so encode/decode round-trips exactly. The special tokens always sit at ids 0..4 because
the model config hard-codes them (pad, bos, eos, mask, unk).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from config.schema import ModelConfig

# (config field prefix, token) in id order: <pad>=0, <bos>=1, <eos>=2, <mask>=3, <unk>=4.
SPECIAL_TOKENS: tuple[tuple[str, str], ...] = (
    ("pad", "<pad>"),
    ("bos", "<bos>"),
    ("eos", "<eos>"),
    ("mask", "<mask>"),
    ("unk", "<unk>"),
)
_SPECIAL_STRINGS = [tok for _, tok in SPECIAL_TOKENS]


class TokenizerError(ValueError):
    """A tokenizer that cannot be used with this model; the message says why."""


def _byte_level_pipeline(tok: Tokenizer) -> Tokenizer:
    from tokenizers import decoders, pre_tokenizers

    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None
    return tok


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2, show_progress: bool = False
) -> Tokenizer:
    """Train a byte-level BPE on a stream of documents (consumed lazily, never held in memory)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if vocab_size <= len(SPECIAL_TOKENS) + 256:
        raise TokenizerError(f"vocab_size ({vocab_size}) must exceed {len(SPECIAL_TOKENS) + 256} (specials + bytes)")
    tok = _byte_level_pipeline(Tokenizer(models.BPE(unk_token="<unk>")))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=_SPECIAL_STRINGS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    seen = [0]

    def counted(docs: Iterable[str]) -> Iterable[str]:
        for doc in docs:
            if doc:
                seen[0] += 1
                yield doc

    tok.train_from_iterator(counted(texts), trainer=trainer)
    if seen[0] == 0:  # a vocabulary of bytes and specials alone would tokenize everything one byte at a time
        raise TokenizerError("no training text: the configured source gave no non-empty documents to train on")
    return tok


def _from_vocab_merges(vocab_path: Path, merges_path: Path) -> Tokenizer:
    """GPT-2 style files: shift the pretrained ids up so our specials own ids 0..4."""
    from tokenizers import Tokenizer, models

    try:
        vocab: dict[str, int] = json.loads(vocab_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"cannot read {vocab_path} as a JSON vocabulary: {e}") from None
    merges = []
    for line in merges_path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise TokenizerError(f"{merges_path}: bad merge line {line!r} (expected two tokens)")
        merges.append((parts[0], parts[1]))
    ordered = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in _SPECIAL_STRINGS]
    new_vocab = {t: i for i, t in enumerate(_SPECIAL_STRINGS)}
    new_vocab.update({t: i + len(_SPECIAL_STRINGS) for i, t in enumerate(ordered)})
    tok = _byte_level_pipeline(Tokenizer(models.BPE(vocab=new_vocab, merges=merges, unk_token="<unk>")))
    tok.add_special_tokens(_SPECIAL_STRINGS)
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load `tokenizer.json`, or a directory / pair of paths holding GPT-2 `vocab.json` + `merges.txt`.

    `path` may be "vocab.json,merges.txt" (comma-separated) for the pair form.
    """
    from tokenizers import Tokenizer

    text = str(path)
    if "," in text:
        vocab_s, merges_s = (p.strip() for p in text.split(",", 1))
        pair = (Path(vocab_s), Path(merges_s))
    else:
        p = Path(path)
        if p.is_dir() and (p / "tokenizer.json").is_file():
            p = p / "tokenizer.json"
        pair = (p / "vocab.json", p / "merges.txt") if p.is_dir() else None
        if pair is None:
            if not p.is_file():
                raise TokenizerError(f"tokenizer file not found: {p} (tokenizer.path)")
            try:
                tok = Tokenizer.from_file(str(p))
            except Exception as e:  # the Rust side raises a bare Exception on malformed JSON
                raise TokenizerError(f"cannot load tokenizer {p}: {e}") from None
            _require_specials(tok, str(p))
            return tok
    for f in pair:
        if not f.is_file():
            raise TokenizerError(f"tokenizer file not found: {f} (tokenizer.path expects vocab.json + merges.txt)")
    tok = _from_vocab_merges(*pair)
    _require_specials(tok, f"{pair[0]} + {pair[1]}")
    return tok


def _require_specials(tok: Tokenizer, where: str) -> None:
    for want_id, token in enumerate(_SPECIAL_STRINGS):
        got = tok.token_to_id(token)
        if got != want_id:
            raise TokenizerError(f"tokenizer {where}: special token {token} has id {got}, expected {want_id}")


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(p))


def check_tokenizer(tok: Tokenizer, model_cfg: ModelConfig) -> None:
    """Refuse a tokenizer whose special ids or size disagree with the model config."""
    for field, token in SPECIAL_TOKENS:
        want = getattr(model_cfg, f"{field}_token_id")
        got = tok.token_to_id(token)
        if got != want:
            raise TokenizerError(
                f"tokenizer has {token} at id {got} but model.{field}_token_id = {want}; "
                "use a tokenizer trained by diffusionlm-train-tokenizer or fix the model config"
            )
    size = tok.get_vocab_size(with_added_tokens=True)
    if size > model_cfg.vocab_size:
        raise TokenizerError(
            f"tokenizer vocabulary ({size}) is larger than model.vocab_size ({model_cfg.vocab_size}); "
            f"raise model.vocab_size to at least {size}"
        )


def tokenizer_sha256(tok: Tokenizer) -> str:
    """Hash of the canonical JSON form: identifies the tokenizer a set of shards was made with."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()

"""Byte-level BPE tokenizer with the fixed special ids the model relies on (HF `tokenizers`)."""

from diffusionlm.tokenizer.bpe import (
    SPECIAL_TOKENS,
    TokenizerError,
    check_tokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_sha256,
    train_tokenizer,
)
from diffusionlm.tokenizer.build import build_tokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "TokenizerError",
    "build_tokenizer",
    "check_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_sha256",
    "train_tokenizer",
]

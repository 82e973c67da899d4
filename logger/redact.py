"""Keeps secrets (API keys, tokens, passwords) out of logs and printed configs."""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "***"

# "token" only as the last word of a key: `hf_token`, `access_token` are secrets, `mask_token_id` and
# `tokens_per_s` are not.
_SECRET_KEY = re.compile(r"(api[_\-.]?key|secret|passw(or)?d|credential|private[_\-.]?key)", re.IGNORECASE)
_SECRET_LAST_WORD = re.compile(r"(^|[_\-.])(token|auth)$", re.IGNORECASE)
# Shorter env values would redact innocent substrings of messages.
_MIN_SECRET_LEN = 8


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key) or _SECRET_LAST_WORD.search(key))


def secret_env_values() -> list[str]:
    """Values of environment variables that hold secrets (WANDB_API_KEY, HF_TOKEN, ...), longest first."""
    values = {
        value
        for name, value in os.environ.items()
        if (name == "WANDB_API_KEY" or is_secret_key(name)) and len(value) >= _MIN_SECRET_LEN
    }
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    for secret in secret_env_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of `obj` (nested dicts/lists) with secret-named keys and secret env values replaced by "***"."""
    secrets = secret_env_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {
            key: (REDACTED if value is not None and is_secret_key(str(key)) else redact(value, secrets))
            for key, value in obj.items()
        }
    if isinstance(obj, list | tuple):
        return type(obj)(redact(item, secrets) for item in obj)
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj

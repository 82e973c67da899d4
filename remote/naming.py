"""Run names and the tmux session names derived from them."""

from __future__ import annotations

import hashlib
import re
import time

from remote.errors import SettingsError

SESSION_PREFIX = "dlm-"


def validate_run_name(name: str) -> str:
    """Anything the trainer accepts as a directory name; spaces and `;` are fine (everything is quoted)."""
    if not name or "/" in name or name in (".", "..") or name.startswith("-"):
        raise SettingsError(f"invalid run name {name!r}: non-empty, no '/', must not start with '-'")
    if any(ord(c) < 32 for c in name):
        raise SettingsError(f"invalid run name {name!r}: control characters are not allowed")
    return name


def generate_run_name(size: str | None) -> str:
    return f"{size or 'custom'}-{time.strftime('%Y%m%d-%H%M%S')}"


def session_name(run_name: str) -> str:
    """tmux rewrites `.`/`:` and treats a trailing `;` as a separator, so keep names to a safe alphabet;
    a short hash keeps two different run names from colliding after sanitizing."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", run_name)
    if safe != run_name:
        safe += "-" + hashlib.sha1(run_name.encode()).hexdigest()[:6]
    return SESSION_PREFIX + safe

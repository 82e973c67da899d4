"""Where the remote host is and how to reach it: REMOTE_* variables from the environment or `.env`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from remote.errors import SettingsError

# One alias for the target in the generated ssh config, so Fabric, ssh and rsync all read the same entry.
HOST_ALIAS = "diffusionlm-target"


@dataclass(frozen=True)
class RemoteSettings:
    host: str
    user: str | None = None
    port: int = 22
    root: str = "~/diffusionlm"
    key: str | None = None
    jump: str | None = None
    known_hosts: str = field(default_factory=lambda: str(Path.home() / ".ssh" / "known_hosts"))
    strict_host_keys: str = "accept-new"  # yes | accept-new | no
    python: str = "python3"
    venv_system_site: bool = False
    state_dir: Path = field(default_factory=lambda: _default_state_dir())
    connect_timeout: int = 10
    retries: int = 2  # extra attempts after the first, for idempotent steps
    backoff_s: float = 1.0
    env_file: Path = Path("env/wandb.env")

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "diffusionlm-remote"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _parse_destination(raw: str) -> tuple[str | None, str, int | None]:
    """`user@host`, `host`, `user@host:port` -> (user, host, port)."""
    user, _, hostport = raw.rpartition("@")
    host, port = hostport, None
    match = re.fullmatch(r"(.+):(\d+)", hostport)
    if match and not hostport.startswith("["):
        host, port = match.group(1), int(match.group(2))
    if not host or any(c.isspace() for c in raw) or host.startswith("-"):
        raise SettingsError(f"REMOTE_HOST={raw!r} is not a valid user@host")
    return (user or None), host, port


def load_settings(env: dict[str, str] | None = None, dotenv_path: str | Path | None = ".env") -> RemoteSettings:
    """Build settings from `env` (default: os.environ) on top of a `.env` file; the environment wins."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if env is None else env)

    raw_host = values.get("REMOTE_HOST") or values.get("PRIME_HOST")
    if not raw_host:
        raise SettingsError(
            "REMOTE_HOST is not set: export REMOTE_HOST=user@host (or PRIME_HOST), or put it in .env "
            "(see .env.example)"
        )
    user, host, port_in_host = _parse_destination(raw_host.strip())
    try:
        port = int(values.get("REMOTE_PORT") or port_in_host or 22)
        connect_timeout = int(values.get("REMOTE_CONNECT_TIMEOUT") or 10)
        retries = int(values.get("REMOTE_RETRIES") or 2)
        backoff_s = float(values.get("REMOTE_BACKOFF_S") or 1.0)
    except ValueError as e:
        raise SettingsError(f"invalid numeric REMOTE_* setting: {e}") from None
    if not 0 < port < 65536:
        raise SettingsError(f"REMOTE_PORT={port} is out of range")
    strict = values.get("REMOTE_STRICT_HOST_KEYS") or "accept-new"
    if strict not in ("yes", "accept-new", "no"):
        raise SettingsError("REMOTE_STRICT_HOST_KEYS must be yes, accept-new or no")
    key = values.get("REMOTE_KEY") or None
    if key is not None:
        key = str(Path(key).expanduser())
        if not Path(key).is_file():
            raise SettingsError(f"REMOTE_KEY={key} does not exist")
    root = (values.get("REMOTE_ROOT") or "~/diffusionlm").rstrip("/") or "/"
    kwargs: dict = {}
    if values.get("REMOTE_KNOWN_HOSTS"):
        kwargs["known_hosts"] = str(Path(values["REMOTE_KNOWN_HOSTS"]).expanduser())
    if values.get("REMOTE_STATE_DIR"):
        kwargs["state_dir"] = Path(values["REMOTE_STATE_DIR"]).expanduser()
    return RemoteSettings(
        host=host,
        user=user,
        port=port,
        root=root,
        key=key,
        jump=values.get("REMOTE_JUMP") or None,
        strict_host_keys=strict,
        python=values.get("REMOTE_PYTHON") or "python3",
        venv_system_site=_truthy(values.get("REMOTE_VENV_SYSTEM_SITE")),
        connect_timeout=connect_timeout,
        retries=max(retries, 0),
        backoff_s=max(backoff_s, 0.0),
        env_file=Path(values.get("REMOTE_ENV_FILE") or "env/wandb.env"),
        **kwargs,
    )

"""Upload env/wandb.env as a 0600 file over SFTP: the secret never touches a command line or a log."""

from __future__ import annotations

import posixpath
from pathlib import Path

from dotenv import dotenv_values

from remote.errors import SettingsError
from remote.layout import quote_remote_path
from remote.session import RemoteSession

REMOTE_ENV_NAME = "wandb.env"


def read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SettingsError(f"{path} not found: copy env/wandb.env.example there, set WANDB_API_KEY")
    values = {k: v for k, v in dotenv_values(path).items() if v}
    if not values.get("WANDB_API_KEY"):
        raise SettingsError(f"{path} has no WANDB_API_KEY value")
    return values


def sync_env(session: RemoteSession, env_file: Path) -> str:
    """Validate locally, upload the exact file content; returns the remote path (the only thing printed)."""
    read_env_file(env_file)
    env_dir = session.layout.env
    session.run(f"mkdir -p {quote_remote_path(env_dir)} && chmod 700 {quote_remote_path(env_dir)}", "env dir")
    remote = posixpath.join(env_dir, REMOTE_ENV_NAME)
    session.put_private_bytes(env_file.read_bytes(), remote)
    print(f"[remote] uploaded {env_file} -> {remote} (mode 0600)")
    return remote


def remote_has_wandb_key(session: RemoteSession) -> bool:
    """True when the host's env file defines a non-empty WANDB_API_KEY (checked without printing it)."""
    remote = quote_remote_path(posixpath.join(session.layout.env, REMOTE_ENV_NAME))
    check = f"test -f {remote} && grep -Eq '^[[:space:]]*(export[[:space:]]+)?WANDB_API_KEY=.+' {remote}"
    return session.run(check, "check wandb credentials", check=False).exited == 0

"""Bootstrap the host, build its environment, prepare data: each step idempotent, so retried freely."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from remote.errors import SettingsError
from remote.layout import join_command, quote_remote_path
from remote.session import RemoteSession


def scripts_dir() -> Path:
    """Helper scripts live in the checkout's `scripts/` (bootstrap runs before the tree is synced)."""
    here = Path(__file__).resolve().parents[1] / "scripts"
    for candidate in (Path.cwd() / "scripts", here):
        if (candidate / "remote_bootstrap.sh").is_file():
            return candidate
    raise SettingsError("scripts/remote_bootstrap.sh not found: run from the diffusionlm checkout")


def _run_script(session: RemoteSession, name: str, args: list[str], what: str) -> str:
    """Upload scripts/<name> under REMOTE_ROOT and run it with quoted args; returns its stdout."""
    root = session.layout.root
    session.run(f"mkdir -p {quote_remote_path(root)}", "create REMOTE_ROOT")
    target = posixpath.join(root, "." + name)
    session.put_bytes((scripts_dir() / name).read_bytes(), target)
    result = session.run(f"bash {quote_remote_path(target)} {join_command(args)}", what, stream=True)
    return result.stdout


def bootstrap(session: RemoteSession, install_tools: bool | None = None) -> str:
    if install_tools is None:
        install_tools = os.environ.get("REMOTE_INSTALL_TOOLS", "1") != "0"
    args = [session.layout.root, "1" if install_tools else "0"]
    return _run_script(session, "remote_bootstrap.sh", args, "bootstrap host")


def build(session: RemoteSession) -> str:
    s = session.settings
    args = [session.layout.root, s.python, "1" if s.venv_system_site else "0"]
    return _run_script(session, "remote_build.sh", args, "build remote environment")


def venv_prefix(session: RemoteSession) -> str:
    """`cd ROOT && . .venv/bin/activate && ` so project tools resolve from the built environment."""
    lay = session.layout
    activate = quote_remote_path(posixpath.join(lay.venv, "bin", "activate"))
    return f"cd {quote_remote_path(lay.root)} && . {activate} && "


def upload_config(session: RemoteSession, local: Path, name: str | None = None) -> str:
    """Copy a local config into REMOTE_ROOT/configs; returns the remote path."""
    if not local.is_file():
        raise SettingsError(f"config file not found: {local}")
    remote = posixpath.join(session.layout.configs, name or local.name)
    session.run(f"mkdir -p {quote_remote_path(session.layout.configs)}", "create configs dir")
    session.put_bytes(local.read_bytes(), remote)
    return remote


def _missing(session: RemoteSession, path: str) -> bool:
    full = path if path.startswith("/") else session.layout.path(path)
    return session.run(f"test -e {quote_remote_path(full)}", "check data path", check=False).exited != 0


def prepare_data(
    session: RemoteSession,
    config: Path | None,
    overrides: list[str],
    *,
    tokenizer: bool = False,
    shards: bool = False,
    tokenizer_args: tuple[str, ...] = (),
    shards_args: tuple[str, ...] = (),
) -> list[str]:
    """Build what the config points at but the host lacks (tokenizer.path, shards_dir), or what is asked.

    Returns the tools that ran; nothing runs when everything is already there (idempotent).
    """
    from config import load_config

    cfg = load_config(config, overrides)
    base = ["--config", upload_config(session, config)] if config else []
    base += [a for o in overrides for a in ("--set", o)]
    todo: list[tuple[str, list[str]]] = []
    if tokenizer or (cfg.tokenizer.path and _missing(session, cfg.tokenizer.path)):
        todo.append(("diffusionlm-train-tokenizer", [*base, *tokenizer_args]))
    shards_dir = cfg.data.shards_dir if cfg.data.source == "shards" else None
    if shards or (shards_dir and _missing(session, shards_dir)):
        # asked for explicitly: a rebuild replaces the shards already there (make-data refuses that otherwise)
        rebuild = ["--overwrite"] if shards and "--overwrite" not in shards_args else []
        todo.append(("diffusionlm-make-data", [*base, *shards_args, *rebuild]))
    if not todo:
        print("[remote] data: nothing to prepare (tokenizer and data are on the host or built in)")
    for tool, args in todo:
        print(f"[remote] data: {tool} {join_command(args)}")
        session.run(venv_prefix(session) + join_command([tool, *args]), tool, stream=True)
    return [t for t, _ in todo]

"""One SSH session to the target (Fabric), with errors turned into clear RemoteError subclasses."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from remote.errors import (
    AuthenticationError,
    ConnectionDropped,
    HostUnreachableError,
    RemoteCommandError,
    RemoteError,
)
from remote.layout import RemoteLayout
from remote.settings import HOST_ALIAS, RemoteSettings
from remote.sshconfig import write_ssh_config

# Tools installed by bootstrap (uv, just) land in ~/.local/bin, which non-login shells often lack.
PATH_PREFIX = 'export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"; '

T = TypeVar("T")


def _connection_error(settings: RemoteSettings, err: BaseException) -> RemoteError:
    """Map paramiko/socket failures while connecting to the error the user should see."""
    import paramiko

    where = f"{settings.destination}:{settings.port}"
    if isinstance(err, paramiko.BadHostKeyException):
        return AuthenticationError(
            f"host key of {where} does not match {settings.known_hosts}: refusing to connect "
            "(remove the stale entry if the host was re-created)"
        )
    if isinstance(err, paramiko.AuthenticationException):
        key = settings.key or "your default ssh keys/agent"
        return AuthenticationError(f"authentication refused by {where} (key: {key}): {err}")
    if isinstance(err, paramiko.SSHException) and "known_hosts" in str(err):
        return AuthenticationError(f"{where} is not in {settings.known_hosts} and strict host keys are on")
    if isinstance(err, socket.gaierror):
        return HostUnreachableError(f"cannot resolve host {settings.host!r}: {err}")
    return HostUnreachableError(f"host unreachable: {where}: {type(err).__name__}: {err}")


def with_retries(settings: RemoteSettings, what: str, attempt: Callable[[], T]) -> T:
    """Run an idempotent step, retrying with exponential backoff when the connection fails or drops."""
    for i in range(settings.retries + 1):
        try:
            return attempt()
        except (HostUnreachableError, ConnectionDropped) as e:
            if i == settings.retries:
                raise
            delay = settings.backoff_s * (2**i)
            print(
                f"[remote] {what}: {e}; retrying in {delay:.1f}s (attempt {i + 2}/{settings.retries + 1})",
                file=sys.stderr,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


class RemoteSession:
    """Open lazily, run quoted commands, move files over SFTP. Use as a context manager."""

    def __init__(self, settings: RemoteSettings) -> None:
        self.settings = settings
        self._conn: Any = None
        self._layout: RemoteLayout | None = None

    def __enter__(self) -> RemoteSession:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        import fabric
        import paramiko

        s = self.settings
        config = fabric.Config(runtime_ssh_path=str(write_ssh_config(s)))
        connect_kwargs: dict[str, Any] = {"banner_timeout": s.connect_timeout, "auth_timeout": s.connect_timeout}
        if s.key:
            # Only the configured key: a stray default key must not mask an authentication failure.
            connect_kwargs.update(key_filename=[s.key], look_for_keys=False, allow_agent=False)
        conn = fabric.Connection(HOST_ALIAS, config=config, connect_kwargs=connect_kwargs)
        # Fabric auto-adds any host key; check against our known_hosts file like ssh does.
        if s.strict_host_keys != "no":
            from pathlib import Path

            known = Path(s.known_hosts)
            known.parent.mkdir(parents=True, exist_ok=True)
            known.touch(exist_ok=True)
            conn.client.load_host_keys(str(known))
            if s.strict_host_keys == "yes":
                conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            conn.open()
        except Exception as e:
            conn.close()
            raise _connection_error(s, e) from e
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self.connect()
        return self._conn

    @property
    def layout(self) -> RemoteLayout:
        """Layout with REMOTE_ROOT made absolute (SFTP does not expand `~`)."""
        if self._layout is None:
            root = self.settings.root
            if root == "~" or root.startswith("~/"):
                home = self.run('printf %s "$HOME"', "resolve $HOME").stdout
                root = home.rstrip("/") + root[1:]
            self._layout = RemoteLayout(root)
        return self._layout

    def run(
        self,
        command: str,
        what: str,
        *,
        check: bool = True,
        stream: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Run one shell command (already quoted by the caller); raise with its stderr on failure."""
        import paramiko

        try:
            result = self.conn.run(
                PATH_PREFIX + command, hide=not stream, warn=True, in_stream=False, timeout=timeout
            )
        except (paramiko.SSHException, EOFError, OSError) as e:
            self.close()
            raise ConnectionDropped(f"connection dropped during {what}: {type(e).__name__}: {e}") from e
        if check and result.exited != 0:
            raise RemoteCommandError(what, result.exited, result.stderr, result.stdout)
        return result

    def sftp(self) -> Any:
        return self.conn.sftp()

    def put_private_bytes(self, data: bytes, remote_path: str) -> None:
        """Write `data` to `remote_path` with mode 0600 before any byte lands; atomic rename at the end."""
        sftp = self.sftp()
        tmp = remote_path + ".uploading"
        with sftp.open(tmp, "wb") as f:
            sftp.chmod(tmp, 0o600)
            f.write(data)
        sftp.posix_rename(tmp, remote_path)

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        sftp = self.sftp()
        with sftp.open(remote_path, "wb") as f:
            f.write(data)

"""Errors the remote CLI reports as one clear line and a distinct exit code."""

from __future__ import annotations


class RemoteError(Exception):
    """Base class; `exit_code` is what `diffusionlm-remote` exits with."""

    exit_code = 1


class SettingsError(RemoteError):
    """Missing or invalid REMOTE_* settings (nothing was contacted)."""

    exit_code = 2


class HostUnreachableError(RemoteError):
    exit_code = 3


class AuthenticationError(RemoteError):
    exit_code = 4


class RemoteCommandError(RemoteError):
    """A command on the host exited non-zero; carries its stderr so the user sees why."""

    exit_code = 5

    def __init__(self, what: str, exit_status: int, stderr: str, stdout: str = "") -> None:
        self.what = what
        self.exit_status = exit_status
        self.stderr = stderr
        self.stdout = stdout
        detail = (stderr.strip() or stdout.strip() or "(no output)")[-4000:]
        super().__init__(f"remote command failed ({what}, exit {exit_status}):\n{detail}")


class SessionConflictError(RemoteError):
    """A tmux session for this run is already alive and --force was not given."""

    exit_code = 6


class ConnectionDropped(RemoteError):
    """The SSH transport died mid-operation; idempotent steps retry on this."""

    exit_code = 3

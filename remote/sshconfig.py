"""Write the one ssh config that Fabric, `ssh` and `rsync -e ssh` all use for the target host."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from remote.settings import HOST_ALIAS, RemoteSettings


def _quote_value(value: str) -> str:
    # ssh_config accepts double-quoted values; paths with spaces need them.
    if any(c in value for c in ' \t"'):
        return '"' + value.replace('"', "") + '"'
    return value


def render_ssh_config(s: RemoteSettings) -> str:
    lines = [
        f"Host {HOST_ALIAS}",
        f"  HostName {s.host}",
        f"  Port {s.port}",
        f"  ConnectTimeout {s.connect_timeout}",
        f"  UserKnownHostsFile {_quote_value(s.known_hosts)}",
        f"  StrictHostKeyChecking {s.strict_host_keys}",
        "  BatchMode yes",  # never prompt for a password: fail fast with a clear error instead
        "  ServerAliveInterval 15",
        "  ServerAliveCountMax 4",
    ]
    if s.user:
        lines.append(f"  User {s.user}")
    if s.key:
        lines += [f"  IdentityFile {_quote_value(s.key)}", "  IdentitiesOnly yes"]
    if s.jump:
        lines.append(f"  ProxyJump {s.jump}")
    return "\n".join(lines) + "\n"


def write_ssh_config(s: RemoteSettings) -> Path:
    """Write (or refresh) the config under the state dir; one file per distinct target."""
    text = render_ssh_config(s)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    s.state_dir.mkdir(parents=True, exist_ok=True)
    path = s.state_dir / f"ssh_config-{digest}"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
        path.chmod(0o600)
    return path


def ssh_command(s: RemoteSettings, *, tty: bool = False) -> list[str]:
    """`ssh -F <config> [-t] <alias>`: append a remote command string to run one."""
    cmd = ["ssh", "-F", str(write_ssh_config(s))]
    if tty:
        cmd.append("-t")
    return [*cmd, HOST_ALIAS]


def rsync_rsh(s: RemoteSettings) -> str:
    """The value for `rsync -e`: rsync splits it like a shell, so quote the config path."""
    return f"ssh -F {shlex.quote(str(write_ssh_config(s)))}"

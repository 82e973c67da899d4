"""Commands that need a terminal (tmux attach, nvitop): plain `ssh -t` with the generated config."""

from __future__ import annotations

import posixpath
import shlex
import subprocess

from remote.layout import quote_remote_path
from remote.session import PATH_PREFIX
from remote.settings import RemoteSettings
from remote.sshconfig import ssh_command


def ssh_tty(settings: RemoteSettings, remote_command: str) -> int:
    return subprocess.call([*ssh_command(settings, tty=True), PATH_PREFIX + remote_command])


def attach(settings: RemoteSettings, session: str) -> int:
    return ssh_tty(settings, f"tmux attach -t {shlex.quote('=' + session)}")


def nvitop(settings: RemoteSettings, venv: str) -> int:
    venv_nvitop = quote_remote_path(posixpath.join(venv, "bin", "nvitop"))
    return ssh_tty(
        settings,
        f"if command -v nvitop >/dev/null; then exec nvitop; "
        f"elif [ -x {venv_nvitop} ]; then exec {venv_nvitop}; "
        "else echo 'nvitop not installed: showing nvidia-smi' >&2; exec nvidia-smi -l 2; fi",
    )

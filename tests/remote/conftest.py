"""A throwaway sshd on 127.0.0.1 (own config, host key, client key, known_hosts) and a REMOTE_ROOT dir."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@dataclass
class SshServer:
    port: int
    user: str
    key: Path
    wrong_key: Path
    known_hosts: Path
    remote_root: Path
    state_dir: Path
    log: Path
    command_log: Path  # every command the server ran, to prove what reached the remote shell
    sessions: list[str] = field(default_factory=list)  # tmux sessions the tests started, killed at the end

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for diffusionlm-remote / just pointing at this server (no .env needed)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REMOTE_", "PRIME_"))}
        env.update(
            REMOTE_HOST=f"{self.user}@127.0.0.1",
            REMOTE_PORT=str(self.port),
            REMOTE_KEY=str(self.key),
            REMOTE_ROOT=str(self.remote_root),
            REMOTE_KNOWN_HOSTS=str(self.known_hosts),
            REMOTE_STRICT_HOST_KEYS="yes",
            REMOTE_STATE_DIR=str(self.state_dir),
            REMOTE_PYTHON=sys.executable,
            REMOTE_VENV_SYSTEM_SITE="1",
            REMOTE_INSTALL_TOOLS="0",
            REMOTE_RETRIES="0",
        )
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> SshServer:
    for tool in (SSHD, SFTP_SERVER, "ssh", "ssh-keygen", "tmux"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (apt-get install openssh-server rsync tmux)")
    base = tmp_path_factory.mktemp("sshd")
    host_key, client_key, wrong_key = base / "host_key", base / "client_key", base / "wrong_key"
    for k in (host_key, client_key, wrong_key):
        _keygen(k)
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_key.pub").read_text())
    authorized.chmod(0o600)
    command_log = base / "commands.log"
    wrapper = base / "log_and_run.sh"
    wrapper.write_text(
        "#!/bin/bash\n"
        f"printf '%s\\n' \"$SSH_ORIGINAL_COMMAND\" >> {shlex.quote(str(command_log))}\n"
        'case "$SSH_ORIGINAL_COMMAND" in\n'
        f"  internal-sftp) exec {SFTP_SERVER} ;;\n"
        '  "") exec bash -l ;;\n'
        '  *) exec bash -c "$SSH_ORIGINAL_COMMAND" ;;\n'
        "esac\n"
    )
    wrapper.chmod(0o755)
    port = _free_port()
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nStrictModes no\nUsePAM no\nPermitRootLogin yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        f"Subsystem sftp internal-sftp\nForceCommand {wrapper}\nMaxStartups 50\nMaxSessions 50\nLogLevel VERBOSE\n"
    )
    known_hosts = base / "known_hosts"
    host_pub = (base / "host_key.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    log = base / "sshd.log"
    # sshd refuses to start without its privilege-separation directory.
    Path("/run/sshd").mkdir(exist_ok=True)
    with log.open("wb") as log_file:  # Popen keeps its own copy of the descriptor
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log_file)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    remote_root = tmp_path_factory.mktemp("remote root")  # a space in the path on purpose
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    server = SshServer(
        port, user, client_key, wrong_key, known_hosts, remote_root, base / "state", log, command_log
    )
    yield server  # type: ignore[misc]
    for name in server.sessions:
        subprocess.run(["tmux", "kill-session", "-t", f"={name}"], capture_output=True)
    proc.terminate()
    proc.wait(timeout=10)


def run_cli(server: SshServer, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """`diffusionlm-remote ARGS` from the repo root against the test server."""
    return subprocess.run(
        [sys.executable, "-m", "cli.remote", *args],
        cwd=REPO_ROOT, env=server.env(**env), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip

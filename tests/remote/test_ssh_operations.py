"""diffusionlm-remote against a real throwaway sshd: errors, bootstrap, sync, sync-env, sessions, fetch."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from remote.session import RemoteSession
from remote.settings import load_settings
from remote.sync import push_tree
from tests.remote.conftest import SshServer, run_cli


def test_exec_runs_quoted_and_failures_show_stderr(sshd: SshServer) -> None:
    ok = run_cli(sshd, "exec", "--", "echo", "a; touch PWNED", "$(touch PWNED2)")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "a; touch PWNED $(touch PWNED2)"
    assert not list(sshd.remote_root.glob("PWNED*"))
    bad = run_cli(sshd, "exec", "--", "ls", "/no/such/dir")
    assert bad.returncode == 5
    assert "remote command failed" in bad.stderr and "No such file or directory" in bad.stderr


def test_unreachable_port_fails_fast_after_retries(sshd: SshServer) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli(sshd, "list-runs", REMOTE_PORT=str(port), REMOTE_RETRIES="1", REMOTE_BACKOFF_S="0.05")
    assert r.returncode == 3
    assert "host unreachable" in r.stderr and f":{port}" in r.stderr and "retrying" in r.stderr


def test_wrong_key_is_reported_as_auth_refused(sshd: SshServer) -> None:
    r = run_cli(sshd, "list-runs", REMOTE_KEY=str(sshd.wrong_key))
    assert r.returncode == 4 and "authentication refused" in r.stderr


def test_changed_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    other = (sshd.wrong_key.parent / "wrong_key.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    r = run_cli(sshd, "list-runs", REMOTE_KNOWN_HOSTS=str(known))
    assert r.returncode == 4 and "host key" in r.stderr


def test_missing_remote_host(sshd: SshServer, tmp_path: Path) -> None:
    env = {k: v for k, v in sshd.env().items() if k not in ("REMOTE_HOST", "PRIME_HOST")}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    r = subprocess.run(
        ["python", "-m", "cli.remote", "--dotenv", str(empty), "list-runs"],
        cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "REMOTE_HOST is not set" in r.stderr


@pytest.mark.slow
def test_bootstrap_is_idempotent(sshd: SshServer) -> None:
    for _ in range(2):
        r = run_cli(sshd, "bootstrap")
        assert r.returncode == 0, r.stderr
        assert "ok      tmux" in r.stdout
    for d in ("src", "runs", "data", "env", "configs"):
        assert (sshd.remote_root / d).is_dir()
    assert stat.S_IMODE((sshd.remote_root / "env").stat().st_mode) == 0o700


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo with space"
    (repo / "pkg").mkdir(parents=True)
    (repo / ".gitignore").write_text("*.secret\n")
    (repo / "pkg" / "a.py").write_text("A = 1\n")
    (repo / "pkg" / "old.py").write_text("OLD = 1\n")
    (repo / "key.secret").write_text("do not sync\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "pkg/a.py", ".gitignore"], cwd=repo, check=True)
    (repo / "untracked;name.txt").write_text("untracked but not ignored\n")
    return repo


@pytest.mark.parametrize("method", ["rsync", "tar"])
def test_sync_respects_gitignore_and_removes_stale_files(sshd: SshServer, tiny_repo: Path, method: str) -> None:
    settings = load_settings(env={**sshd.env(), "REMOTE_ROOT": str(sshd.remote_root / f"sync-{method}")})
    src = sshd.remote_root / f"sync-{method}" / "src"
    with RemoteSession(settings) as session:
        assert push_tree(session, method=method, root=tiny_repo) == method
        assert (src / "pkg" / "old.py").read_text() == "OLD = 1\n"
        assert (src / "untracked;name.txt").is_file() and not (src / "key.secret").exists()
        (tiny_repo / "pkg" / "old.py").unlink()
        (tiny_repo / "pkg" / "a.py").write_text("A = 2\n")
        (src / "host_made.txt").write_text("created on the host\n")
        push_tree(session, method=method, root=tiny_repo)
    assert not (src / "pkg" / "old.py").exists()
    assert (src / "pkg" / "a.py").read_text() == "A = 2\n"
    assert (src / "host_made.txt").is_file()  # only files we synced are ever removed


def test_sync_env_is_private_and_secret_never_shown(sshd: SshServer, tmp_path: Path) -> None:
    secret = "wandb-secret-7f3a9c1e"
    env_file = tmp_path / "wandb.env"
    env_file.write_text(f"WANDB_API_KEY={secret}\n")
    r = run_cli(sshd, "sync-env", f"env_file={env_file}")
    assert r.returncode == 0, r.stderr
    remote = sshd.remote_root / "env" / "wandb.env"
    assert remote.read_text() == env_file.read_text()
    assert stat.S_IMODE(remote.stat().st_mode) == 0o600
    assert secret not in r.stdout + r.stderr
    assert secret not in sshd.command_log.read_text() and secret not in sshd.log.read_text()
    empty = tmp_path / "empty.env"
    empty.write_text("WANDB_API_KEY=\n")
    r = run_cli(sshd, "sync-env", "--env-file", str(empty))
    assert r.returncode == 2 and "no WANDB_API_KEY" in r.stderr
    assert remote.read_text() == env_file.read_text()  # bad input lost nothing


@pytest.mark.slow
def test_second_train_refused_and_kill_train(sshd: SshServer) -> None:
    session = "dlm-fake-run"
    sshd.sessions.append(session)
    started = run_cli(sshd, "exec", "--", "tmux", "new-session", "-d", "-s", session, "sleep 300")
    assert started.returncode == 0, started.stderr
    refused = run_cli(sshd, "train", "--extra", "--set training.seed=1")
    assert refused.returncode == 6 and "already running" in refused.stderr and session in refused.stderr
    unconfirmed = subprocess.run(
        ["just", "kill-train"], cwd=Path(__file__).resolve().parents[2], env=sshd.env(),
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )  # fmt: skip
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr
    assert subprocess.run(["tmux", "has-session", "-t", f"={session}"]).returncode == 0
    killed = run_cli(sshd, "kill-train", "run=fake-run", "--yes", "--grace", "5")
    assert killed.returncode == 0, killed.stderr
    assert "interrupted" in killed.stdout  # Ctrl-C sufficed, no hard kill needed
    assert subprocess.run(["tmux", "has-session", "-t", f"={session}"], capture_output=True).returncode != 0
    none = run_cli(sshd, "kill-train", "--yes")
    assert none.returncode == 2 and "no training session" in none.stderr


@pytest.mark.parametrize("method", ["rsync", "tar"])
def test_fetch_is_resumable_and_path_injection_is_harmless(sshd: SshServer, tmp_path: Path, method: str) -> None:
    run_dir = sshd.remote_root / "runs" / "fetch me;x"
    (run_dir / "checkpoints" / "step_5").mkdir(parents=True, exist_ok=True)
    blob = os.urandom(300_000)
    (run_dir / "checkpoints" / "step_5" / "model.bin").write_bytes(blob)
    (run_dir / "metrics.jsonl").write_text('{"step": 5}\n')
    dest = tmp_path / "out"
    partial = dest / "runs" / "fetch me;x" / "checkpoints" / "step_5" / "model.bin"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(blob[:100_000])  # an interrupted earlier fetch
    r = run_cli(sshd, "fetch", "any_file=runs/fetch me;x", f"dest={dest}", f"method={method}")
    assert r.returncode == 0, r.stderr
    assert partial.read_bytes() == blob
    assert (dest / "runs" / "fetch me;x" / "metrics.jsonl").read_text() == '{"step": 5}\n'
    if method == "tar":
        assert "1 already complete" not in r.stdout and "2 copied" in r.stdout
        again = run_cli(sshd, "fetch", "runs/fetch me;x", "--dest", str(dest), "--method", "tar")
        assert "2 already complete" in again.stdout
    evil = run_cli(sshd, "fetch", "runs/x; touch PWNED", "--dest", str(dest), "--method", method)
    assert evil.returncode == 5 and "no such file" in evil.stderr
    assert not list(sshd.remote_root.rglob("PWNED*"))

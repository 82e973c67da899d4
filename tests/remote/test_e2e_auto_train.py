"""`just auto-train` end to end on the throwaway sshd: tiny CPU run in tmux, list-runs, fetch, no leaks."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.remote.conftest import REPO_ROOT, SshServer

TINY = (
    "--set model.d_model=64 --set model.n_layers=2 --set model.n_heads=2 --set model.vocab_size=512 "
    "--set tokenizer.vocab_size=512 --set tokenizer.train_docs=300 --set model.context_length=64 "
    "--set data.batch_size=4 --set training.max_train_iteration=10 --set training.val_freq_iteration=5 "
    "--set training.max_val_iteration=2 --set checkpoint.save_freq_iteration=5 "
    "--set optimizer.warmup_iteration=2 --set inference.total_length=64 --set model.device=cpu"
)
# Spaces, `;`, `$()` and backticks: if anything reached a shell unquoted, a PWNED file would appear.
RUN = "e2e; touch PWNED $(touch PWNED2) `touch PWNED3`"


def just(server: SshServer, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["just", *args], cwd=REPO_ROOT, env=server.env(**env), capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _cmdlines() -> str:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    return "\n".join(out)


@pytest.mark.slow
def test_auto_train_runs_lists_and_fetches(sshd: SshServer, tmp_path: Path) -> None:
    secret = "wandb-e2e-secret-91d2"
    env_file = tmp_path / "wandb.env"
    env_file.write_text(f"WANDB_API_KEY={secret}\n")
    env = {"REMOTE_ENV_FILE": str(env_file)}

    started = just(sshd, "auto-train", f"extra={TINY}", f"run={RUN}", **env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.strip().splitlines()[-1] == RUN  # returns at once, printing the run name
    from remote.naming import session_name

    sshd.sessions.append(session_name(RUN))
    assert secret not in _cmdlines()

    deadline = time.monotonic() + 75
    while True:
        listed = just(sshd, "list-runs", **env)
        assert listed.returncode == 0, listed.stderr
        line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(RUN))
        if "running" not in line or time.monotonic() > deadline:
            break
        time.sleep(1.5)
    run_dir = sshd.remote_root / "runs" / RUN
    assert "finished" in line, (line, (run_dir / "console.log").read_text()[-3000:])

    dest = tmp_path / "fetched"
    fetched = just(sshd, "fetch", f"any_file=runs/{RUN}", f"dest={dest}", **env)
    assert fetched.returncode == 0, fetched.stderr
    local = dest / "runs" / RUN
    assert (local / "metrics.jsonl").stat().st_size > 0
    assert list((local / "checkpoints").glob("step_*")), list(local.iterdir())
    assert (local / "final" / "model.safetensors").is_file()
    assert (run_dir / "metrics.jsonl").is_file()  # the host keeps its copy

    assert stat.S_IMODE((sshd.remote_root / "env" / "wandb.env").stat().st_mode) == 0o600
    logs = just(sshd, "logs", f"run={RUN}", "lines=5", **env)
    assert logs.returncode == 0 and "trainer exited with status 0" in logs.stdout
    for text in (started.stdout, started.stderr, listed.stdout, fetched.stdout, logs.stdout,
                 sshd.command_log.read_text(), (run_dir / "console.log").read_text(),
                 (run_dir / "launch.sh").read_text()):  # fmt: skip
        assert secret not in text
    assert not list(sshd.remote_root.rglob("PWNED*")) and not list(REPO_ROOT.glob("PWNED*"))

    again = just(sshd, "auto-train", f"extra={TINY}", f"run={RUN}-2", "--no-install", **env)
    assert again.returncode == 0, again.stderr  # idempotent: every step is safe to repeat
    sshd.sessions.append(session_name(RUN + "-2"))
    killed = just(sshd, "kill-train", "--yes", "--grace", "3", **env)
    assert killed.returncode == 0, killed.stderr

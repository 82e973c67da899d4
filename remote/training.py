"""Start training in a named tmux session on the host, list runs, stop them, read their logs."""

from __future__ import annotations

import posixpath
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from remote.errors import RemoteCommandError, SessionConflictError, SettingsError
from remote.host_setup import upload_config
from remote.layout import join_command, quote_remote_path
from remote.naming import SESSION_PREFIX, generate_run_name, session_name, validate_run_name
from remote.secrets_env import REMOTE_ENV_NAME, remote_has_wandb_key
from remote.session import PATH_PREFIX, RemoteSession

LAUNCHERS = {"single": "diffusionlm-train", "ddp": "diffusionlm-train-ddp"}


def split_extra(extra: str) -> tuple[list[str], list[str]]:
    """Split the user's extra trainer args; also return the `--set` overrides (to validate locally)."""
    args = shlex.split(extra)
    overrides = []
    for i, a in enumerate(args):
        if a == "--set" and i + 1 < len(args):
            overrides.append(args[i + 1])
        elif a.startswith("--set="):
            overrides.append(a.removeprefix("--set="))
        elif a == "--config" or a.startswith("--config="):
            raise SettingsError("pass the config as config=<toml> (the --config option), not inside extra")
    return args, overrides


def running_sessions(session: RemoteSession) -> list[str]:
    out = session.run("tmux list-sessions -F '#{session_name}' 2>/dev/null || true", "list tmux sessions")
    return [n for n in out.stdout.split() if n.startswith(SESSION_PREFIX)]


@dataclass(frozen=True)
class LaunchPlan:
    run_name: str
    session: str
    wandb: bool
    argv: list[str]


def plan_launch(
    config: Path | None, extra: str, run_name: str | None, launcher: str = "single"
) -> tuple[LaunchPlan, list[str]]:
    """Validate the config locally (fast, clear errors) and decide run name, session and trainer argv."""
    from config import ConfigError, load_config

    if launcher not in LAUNCHERS:
        raise SettingsError(f"launcher must be one of {sorted(LAUNCHERS)}, got {launcher!r}")
    extra_args, overrides = split_extra(extra)
    try:
        cfg = load_config(config, overrides)
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    name = validate_run_name(run_name or cfg.logging.run_name or generate_run_name(cfg.model.size))
    wandb = cfg.logging.backend == "wandb" and cfg.wandb.mode == "online"
    argv = [LAUNCHERS[launcher], *extra_args, "--set", f"logging.run_name={name}"]
    return LaunchPlan(name, session_name(name), wandb, argv), overrides


def _launch_script(session: RemoteSession, plan: LaunchPlan, config_path: str | None) -> str:
    lay = session.layout
    run_dir = lay.run_dir(plan.run_name)
    argv = list(plan.argv)
    if config_path:
        argv[1:1] = ["--config", config_path]
    q = quote_remote_path
    env_file = q(posixpath.join(lay.env, REMOTE_ENV_NAME))
    return "\n".join([
        "#!/usr/bin/env bash",
        "# Written by `diffusionlm-remote train`; rerun it by hand to relaunch this run the same way.",
        "set -o pipefail",
        PATH_PREFIX,
        f"cd {q(lay.root)} || exit 1",
        f". {q(posixpath.join(lay.venv, 'bin', 'activate'))} || exit 1",
        # Secrets come from the 0600 file, never from the command line.
        f"if [ -f {env_file} ]; then set -a; . {env_file}; set +a; fi",
        f"printf '%s\\n' {shlex.quote('[remote] starting: ' + join_command(argv))}",
        f"{join_command(argv)} 2>&1 | tee -a {q(posixpath.join(run_dir, 'console.log'))}",
        "status=${PIPESTATUS[0]}",
        f"echo \"$status\" > {q(posixpath.join(run_dir, 'exit_code'))}",
        f'echo "[remote] trainer exited with status $status" | tee -a {q(posixpath.join(run_dir, "console.log"))}',
        'exit "$status"',
        "",
    ])  # fmt: skip


def start_training(
    session: RemoteSession,
    config: Path | None,
    extra: str = "",
    run_name: str | None = None,
    *,
    launcher: str = "single",
    force: bool = False,
) -> str:
    """Launch the trainer detached in tmux and return the run name at once."""
    plan, _ = plan_launch(config, extra, run_name, launcher)
    alive = running_sessions(session)
    if alive and not force:
        raise SessionConflictError(
            f"training session(s) already running on the host: {', '.join(alive)}; "
            "use attach-train / kill-train, or pass --force to start another"
        )
    if plan.wandb and not remote_has_wandb_key(session):
        raise SettingsError(
            "the config logs to wandb but the host has no WANDB_API_KEY: fill env/wandb.env and run "
            "`just sync-env` (or set [wandb] mode = \"offline\")"
        )
    lay = session.layout
    run_dir = lay.run_dir(plan.run_name)
    session.run(f"mkdir -p {quote_remote_path(run_dir)}", "create run dir")
    config_path = upload_config(session, config, f"{plan.run_name}.toml") if config else None
    script = posixpath.join(run_dir, "launch.sh")
    session.put_bytes(_launch_script(session, plan, config_path).encode(), script)
    if plan.session in alive:  # --force on the same run: replace the old session
        session.run(f"tmux kill-session -t {shlex.quote('=' + plan.session)}", "kill old session", check=False)
    start = join_command(["tmux", "new-session", "-d", "-s", plan.session, "-c", lay.root, "bash", script])
    session.run(start, "start tmux session")
    print(f"[remote] started run {plan.run_name!r} in tmux session {plan.session!r}; log: {run_dir}/console.log")
    print(plan.run_name)
    return plan.run_name


@dataclass(frozen=True)
class RunInfo:
    name: str
    state: str
    checkpoints: int
    has_final: bool


def list_runs(session: RemoteSession) -> list[RunInfo]:
    sftp = session.sftp()
    runs_dir = session.layout.runs
    try:
        entries = sorted(sftp.listdir_attr(runs_dir), key=lambda e: e.st_mtime or 0)
    except OSError:
        return []
    alive = set(running_sessions(session))
    infos = []
    for e in entries:
        d = posixpath.join(runs_dir, e.filename)
        try:
            names = set(sftp.listdir(d))
        except OSError:
            continue  # a file, not a run directory
        checkpoints = len(sftp.listdir(posixpath.join(d, "checkpoints"))) if "checkpoints" in names else 0
        if session_name(e.filename) in alive:
            state = "running"
        elif "exit_code" in names:
            with sftp.open(posixpath.join(d, "exit_code")) as f:
                code = f.read().decode().strip()
            state = "finished" if code == "0" else f"failed (exit {code})"
        else:
            state = "stopped"
        infos.append(RunInfo(e.filename, state, checkpoints, "final" in names))
    return infos


def format_runs(infos: list[RunInfo]) -> str:
    if not infos:
        return "no runs on the host yet"
    width = max(len(i.name) for i in infos)
    rows = [f"{'RUN':<{width}}  {'STATE':<18}  CHECKPOINTS  FINAL"]
    rows += [f"{i.name:<{width}}  {i.state:<18}  {i.checkpoints:<11}  {'yes' if i.has_final else 'no'}" for i in infos]
    return "\n".join(rows)


def resolve_session(session: RemoteSession, run_name: str | None) -> str:
    """The session of `run_name`, or the only running one."""
    alive = running_sessions(session)
    if run_name:
        name = session_name(validate_run_name(run_name))
        if name not in alive:
            raise SettingsError(f"no running training session for run {run_name!r} (running: {alive or 'none'})")
        return name
    if len(alive) != 1:
        raise SettingsError(
            "no training session is running" if not alive else f"several sessions run ({', '.join(alive)}): pass run="
        )
    return alive[0]


def kill_training(session: RemoteSession, run_name: str | None, *, yes: bool, grace_s: float = 10.0) -> str:
    target = resolve_session(session, run_name)
    if not yes:
        if not sys.stdin.isatty():
            raise SettingsError(f"refusing to kill {target!r} without confirmation: pass --yes")
        answer = input(f"Stop training session {target!r} on {session.settings.destination}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("[remote] not stopped")
            return target
    q = shlex.quote("=" + target)
    # Ctrl-C first so the trainer can finish its step and write a checkpoint; then make sure.
    # send-keys wants a pane target: `=name:` is the current window of the tmux session of exactly that name.
    session.run(f"tmux send-keys -t {shlex.quote('=' + target + ':')} C-c", "interrupt training", check=False)
    deadline = time.monotonic() + grace_s
    how = "killed"
    while time.monotonic() < deadline:
        if session.run(f"tmux has-session -t {q} 2>/dev/null", "poll session", check=False).exited != 0:
            how = "interrupted"
            break
        time.sleep(0.25)
    else:
        session.run(f"tmux kill-session -t {q}", "kill session", check=False)
    if target in running_sessions(session):
        raise RemoteCommandError("kill-train", 1, f"session {target!r} is still running")
    print(f"[remote] stopped {target} ({how})")
    return target


def latest_run(session: RemoteSession) -> str:
    infos = list_runs(session)
    if not infos:
        raise SettingsError("no runs on the host yet")
    return infos[-1].name


def tail_log_command(session: RemoteSession, run_name: str, lines: int, follow: bool) -> str:
    log = quote_remote_path(posixpath.join(session.layout.run_dir(validate_run_name(run_name)), "console.log"))
    return f"tail -n {int(lines)} {'-F ' if follow else ''}{log}"

"""`diffusionlm-remote <verb>`: train on a GPU host over SSH. The Justfile recipes are one-line calls into this."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

VERBS_HELP = """exit codes: 0 ok, 2 bad settings/usage, 3 host unreachable, 4 authentication refused,
5 remote command failed (its stderr is shown), 6 a training session is already running"""


def _settings(args: argparse.Namespace):
    from remote.settings import load_settings

    return load_settings(dotenv_path=args.dotenv)


def _with_session(args: argparse.Namespace, what: str, step: Callable, *, retry: bool = True, settings=None):
    """Open a session and run step(session); idempotent steps are retried when the connection fails."""
    from remote.session import RemoteSession, with_retries

    settings = settings or _settings(args)

    def attempt():
        with RemoteSession(settings) as session:
            return step(session)

    return with_retries(settings, what, attempt) if retry else attempt()


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from remote.host_setup import bootstrap

    _with_session(args, "bootstrap", lambda s: bootstrap(s, install_tools=args.install_tools))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from remote.sync import push_tree

    _with_session(args, "sync", lambda s: push_tree(s, method=args.method))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from remote.host_setup import build

    _with_session(args, "build", build)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from remote.host_setup import prepare_data

    def step(session):
        return prepare_data(
            session,
            _config_path(args.config),
            list(args.set or []),
            tokenizer=args.tokenizer,
            shards=args.shards,
            tokenizer_args=tuple(shlex.split(args.tokenizer_args)),
            shards_args=tuple(shlex.split(args.shards_args)),
        )

    _with_session(args, "data", step)
    return 0


def cmd_sync_env(args: argparse.Namespace) -> int:
    from remote.secrets_env import sync_env

    env_file = Path(args.env_file) if args.env_file else _settings(args).env_file
    _with_session(args, "sync-env", lambda s: sync_env(s, env_file))
    return 0


def _config_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def cmd_train(args: argparse.Namespace) -> int:
    from remote.training import plan_launch, start_training

    # Validate the config before touching the network: bad input fails in milliseconds.
    plan_launch(_config_path(args.config), args.extra, args.run_name or None, args.launcher)
    _with_session(
        args,
        "train",
        lambda s: start_training(
            s, _config_path(args.config), args.extra, args.run_name or None, launcher=args.launcher, force=args.force
        ),
        retry=False,  # starting a run is not idempotent
    )
    return 0


def cmd_auto_train(args: argparse.Namespace) -> int:
    from remote.host_setup import bootstrap, build, prepare_data
    from remote.secrets_env import sync_env
    from remote.sync import push_tree
    from remote.training import plan_launch, start_training

    config = _config_path(args.config)
    plan, overrides = plan_launch(config, args.extra, args.run_name or None, args.launcher)
    settings = _settings(args)
    env_file = settings.env_file
    steps: list[tuple[str, Callable]] = [
        ("bootstrap", lambda s: bootstrap(s, install_tools=args.install_tools)),
        ("sync", lambda s: push_tree(s, method=args.method)),
        ("build", build),
        ("data", lambda s: prepare_data(s, config, overrides)),
    ]
    if env_file.is_file() or plan.wandb:
        steps.append(("sync-env", lambda s: sync_env(s, env_file)))
    for name, step in steps:
        print(f"[remote] == {name}", file=sys.stderr)
        _with_session(args, name, step)
    print("[remote] == train", file=sys.stderr)
    _with_session(
        args,
        "train",
        lambda s: start_training(s, config, args.extra, plan.run_name, launcher=args.launcher, force=args.force),
        retry=False,
    )
    return 0


def cmd_list_runs(args: argparse.Namespace) -> int:
    from remote.training import format_runs, list_runs

    print(format_runs(_with_session(args, "list-runs", list_runs)))
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from remote.training import kill_training

    _with_session(
        args, "kill-train", lambda s: kill_training(s, args.run or None, yes=args.yes, grace_s=args.grace), retry=False
    )
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from remote.sync import fetch

    _with_session(args, "fetch", lambda s: fetch(s, args.path, Path(args.dest), method=args.method))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from remote.training import latest_run, tail_log_command

    def step(session):
        run = args.run or latest_run(session)
        print(f"[remote] console log of run {run!r}", file=sys.stderr)
        session.run(tail_log_command(session, run, args.lines, args.follow), "tail log", stream=True)

    _with_session(args, "logs", step, retry=not args.follow)
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    from remote.interactive import attach
    from remote.training import resolve_session

    target = _with_session(args, "attach", lambda s: resolve_session(s, args.run or None))
    return attach(_settings(args), target)


def cmd_nvitop(args: argparse.Namespace) -> int:
    from remote.interactive import nvitop

    venv = _with_session(args, "nvitop", lambda s: s.layout.venv)
    return nvitop(_settings(args), venv)


def cmd_infer(args: argparse.Namespace) -> int:
    from remote.errors import SettingsError
    from remote.host_setup import venv_prefix
    from remote.layout import join_command

    if not re.fullmatch(r"diffusionlm-[a-z-]+", args.command):
        raise SettingsError(f"--command must be a diffusionlm-* tool, got {args.command!r}")
    argv = [args.command, *shlex.split(args.args)]
    _with_session(args, "infer", lambda s: s.run(venv_prefix(s) + join_command(argv), args.command, stream=True))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from remote.errors import SettingsError
    from remote.layout import join_command, quote_remote_path

    if not args.argv:
        raise SettingsError("exec needs a command: diffusionlm-remote exec -- CMD [ARGS...]")

    def step(session):
        root = quote_remote_path(session.layout.root)
        result = session.run(f"cd {root} && {join_command(args.argv)}", args.argv[0])
        sys.stdout.write(result.stdout)

    _with_session(args, "exec", step, retry=False)
    return 0


def _jetson_settings(args: argparse.Namespace):
    import os

    from remote.jetson import jetson_settings

    return jetson_settings(dict(os.environ), dotenv_path=args.dotenv)


def cmd_deploy_jetson(args: argparse.Namespace) -> int:
    from remote.jetson import deploy_steps

    settings = _jetson_settings(args)  # bad settings fail before anything is contacted
    for name, step in deploy_steps(Path(args.bundle)):
        print(f"[remote] == {name}", file=sys.stderr)
        _with_session(args, name, step, settings=settings)
    return 0


def cmd_bench_jetson(args: argparse.Namespace) -> int:
    from remote.jetson import fetch_file, run_bench

    settings = _jetson_settings(args)
    name = Path(args.bundle).name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    local = Path(args.output or f"benchmarking/results/bench_infer_jetson_{name}_{stamp}.json")

    def step(session):
        return fetch_file(session, run_bench(session, name, shlex.split(args.args)), local)

    _with_session(args, "bench-jetson", step, retry=False, settings=settings)
    print(local)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffusionlm-remote",
        description="Train diffusionlm on a GPU host reachable over SSH (settings: REMOTE_* in env or .env).",
        epilog=VERBS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dotenv", default=".env", help="dotenv file with REMOTE_* settings (default: .env)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    def add_method(p: argparse.ArgumentParser) -> None:
        p.add_argument("--method", choices=["auto", "rsync", "tar"], default="auto", help="transfer tool")

    def add_train_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="", help="training TOML (default: the trainer's defaults)")
        p.add_argument("--extra", default="", help="extra trainer arguments, e.g. \"--set training.seed=1\"")
        p.add_argument("--run", dest="run_name", default="", help="run name (default: config's or generated)")
        p.add_argument("--launcher", choices=["single", "ddp"], default="single")
        p.add_argument("--force", action="store_true", help="start even if a training session is running")

    p = verb("bootstrap", cmd_bootstrap, "idempotent host setup: directories, tmux, uv, just, nvitop")
    p.add_argument("--no-install", dest="install_tools", action="store_false", default=None)
    add_method(verb("sync", cmd_sync, "push the working tree (git-visible files) to REMOTE_ROOT/src"))
    verb("build", cmd_build, "create/refresh REMOTE_ROOT/.venv and install the project")
    p = verb("data", cmd_data, "prepare tokenizer/shards the config needs on the host")
    p.add_argument("--config", default="")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    p.add_argument("--tokenizer", action="store_true", help="run diffusionlm-train-tokenizer even if not needed")
    p.add_argument("--shards", action="store_true", help="run diffusionlm-make-data even if not needed")
    p.add_argument("--tokenizer-args", default="")
    p.add_argument("--shards-args", default="")
    p = verb("sync-env", cmd_sync_env, "upload env/wandb.env as a 0600 file (via SFTP, never on a command line)")
    p.add_argument("--env-file", default="")
    add_train_options(verb("train", cmd_train, "start training in a tmux session; prints the run name"))
    p = verb("auto-train", cmd_auto_train, "bootstrap + sync + build + data + sync-env + train")
    add_train_options(p)
    add_method(p)
    p.add_argument("--no-install", dest="install_tools", action="store_false", default=None)
    verb("list-runs", cmd_list_runs, "runs on the host with their state")
    p = verb("kill-train", cmd_kill, "stop a training session (asks first)")
    p.add_argument("--run", default="")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--grace", type=float, default=10.0, help="seconds to wait after Ctrl-C before killing")
    p = verb("fetch", cmd_fetch, "pull a file or directory (relative to REMOTE_ROOT) back; resumable")
    p.add_argument("path")
    p.add_argument("--dest", default=".", help="local directory (default: .)")
    add_method(p)
    p = verb("logs", cmd_logs, "tail a run's console log (default: the latest run)")
    p.add_argument("--run", default="")
    p.add_argument("-n", "--lines", type=int, default=50)
    p.add_argument("-f", "--follow", action="store_true")
    p = verb("attach", cmd_attach, "attach to the training tmux session (ssh -t)")
    p.add_argument("--run", default="")
    verb("nvitop", cmd_nvitop, "GPU monitor on the host")
    p = verb("infer", cmd_infer, "run a diffusionlm tool (default diffusionlm-infer) in the host environment")
    p.add_argument("--command", default="diffusionlm-infer")
    p.add_argument("--args", default="", help="its arguments as one string")
    p = verb("deploy-jetson", cmd_deploy_jetson,
             "Jetson (JETSON_*): sync the tree and a bundle, build the environment and the kernels, parity-check")
    p.add_argument("--bundle", required=True, help="export bundle directory (diffusionlm-export)")
    p = verb("bench-jetson", cmd_bench_jetson,
             "Jetson (JETSON_*): diffusionlm-bench-infer on a deployed bundle, its JSON fetched back")
    p.add_argument("--bundle", required=True, help="the bundle deployed with deploy-jetson (its directory name)")
    p.add_argument("--args", default="", help="extra bench flags as one string; they override the grid")
    p.add_argument("--output", default="", help="local JSON path (default: benchmarking/results/"
                                                "bench_infer_jetson_<bundle>_<time>.json)")
    p = verb("exec", cmd_exec, "run one command in REMOTE_ROOT (arguments are quoted, not interpreted)")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


def _subparser(parser: argparse.ArgumentParser, verb: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(verb)
    return None


def translate_key_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Accept just-style `key=value` words (`config=x.toml extra="..."`) as the verb's `--key value`.

    `any_file=PATH` is fetch's positional path. Only words naming a real option of the verb are rewritten,
    and nothing after `--` or in `exec`, so values that merely contain `=` pass through unchanged.
    """
    verb_at = None
    for i, word in enumerate(argv):
        if not word.startswith("-") and (i == 0 or argv[i - 1] != "--dotenv"):
            verb_at = i
            break
    if verb_at is None or argv[verb_at] == "exec":
        return argv
    sub = _subparser(parser, argv[verb_at])
    if sub is None:
        return argv
    out = argv[: verb_at + 1]
    rest = argv[verb_at + 1 :]
    for i, word in enumerate(rest):
        if word == "--":
            out += rest[i:]
            break
        key, sep, value = word.partition("=")
        option = "--" + key.replace("_", "-")
        if sep and key == "any_file":
            out.append(value)
        elif sep and re.fullmatch(r"[a-z_]+", key) and option in sub._option_string_actions:
            out.append(f"{option}={value}")
        else:
            out.append(word)
    return out


def main(argv: list[str] | None = None) -> int:
    from config import ConfigError
    from remote.errors import RemoteError

    parser = build_parser()
    args = parser.parse_args(translate_key_values(parser, sys.argv[1:] if argv is None else list(argv)))
    if getattr(args, "argv", None) and args.argv[0] == "--":
        args.argv = args.argv[1:]
    try:
        return args.func(args)
    except RemoteError as e:
        print(f"diffusionlm-remote {args.verb}: error: {e}", file=sys.stderr)
        return e.exit_code
    except ConfigError as e:
        print(f"diffusionlm-remote {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

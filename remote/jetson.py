"""The Jetson edge device: its settings (JETSON_*), deploying a bundle with the kernels built and parity-checked
there, and benchmarking the bundle there.

The device is driven through the same settings object, session and sync code as the training host; only the
variable prefix differs, so a REMOTE_HOST set for training never sends a deploy to the GPU host.
"""

from __future__ import annotations

import posixpath
import time
from pathlib import Path

from remote.errors import SettingsError
from remote.host_setup import build, venv_prefix
from remote.layout import join_command, quote_remote_path
from remote.session import RemoteSession
from remote.settings import RemoteSettings, load_settings
from remote.sync import push_dir, push_tree

PREFIX = "JETSON_"
# Defaults that differ from the training host's: JetPack's torch wheel is installed system-wide, so the venv
# sees system site packages and installs the project without downloads.
DEFAULTS = {"VENV_SYSTEM_SITE": "1"}
KERNELS = ["python3", "-m", "diffusionlm.ops.build_kernels", "--arch", "8.7", "--parity"]
BENCH_CONFIG = "config/resources/bench_infer_jetson.toml"
# The grid of config/resources/bench_infer_jetson.toml's header; later flags (`args=`) override these.
BENCH_ARGS = ["--batch-sizes", "1", "--gen-len", "64,128", "--steps", "10,25,50",
              "--estimate-device", "jetson-orin-nano-8gb"]


def jetson_settings(environ: dict[str, str], dotenv_path: str | Path | None = ".env") -> RemoteSettings:
    """RemoteSettings from JETSON_* (environment over .env), read exactly as REMOTE_* are for the training host."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(environ)
    if not values.get(PREFIX + "HOST"):
        raise SettingsError("JETSON_HOST is not set: export JETSON_HOST=user@jetson (or JETSON_USER and "
                            "JETSON_HOST), or put it in .env (see .env.example)")
    env = {"REMOTE_" + k: v for k, v in DEFAULTS.items()}
    env.update({"REMOTE_" + k.removeprefix(PREFIX): v for k, v in values.items() if k.startswith(PREFIX) and v})
    if values.get("JETSON_USER") and "@" not in values["JETSON_HOST"]:
        env["REMOTE_HOST"] = f"{values['JETSON_USER']}@{values['JETSON_HOST']}"
    try:
        return load_settings(env, dotenv_path=None)
    except SettingsError as e:  # name the variable the user actually set
        raise SettingsError(str(e).replace("REMOTE_", PREFIX)) from None


def bundle_dir(session: RemoteSession, name: str) -> str:
    return session.layout.path("bundles", name)


def deploy_steps(bundle: Path) -> list[tuple[str, object]]:
    """(name, step(session)) in order: source tree (with csrc/), bundle, environment, kernels + parity."""
    if not (bundle / "manifest.json").is_file():
        raise SettingsError(f"bundle={bundle}: no manifest.json (write one with diffusionlm-export)")

    def kernels(session: RemoteSession) -> None:
        src = quote_remote_path(session.layout.src)
        session.run(f"{venv_prefix(session)}cd {src} && {join_command(KERNELS)}", "build kernels + parity",
                    stream=True)

    return [
        ("sync", lambda s: push_tree(s)),
        ("bundle", lambda s: push_dir(s, bundle, bundle_dir(s, bundle.name))),
        ("build", build),
        ("kernels", kernels),
    ]


def run_bench(session: RemoteSession, bundle_name: str, extra: list[str]) -> str:
    """Run the bench on the deployed bundle into a fresh results file on the device; returns its path."""
    bundle = bundle_dir(session, bundle_name)
    if session.run(f"test -f {quote_remote_path(posixpath.join(bundle, 'manifest.json'))}", "find bundle",
                   check=False).exited != 0:
        raise SettingsError(f"no bundle {bundle_name!r} on the device ({bundle}): run `just deploy-jetson` first")
    out = session.layout.path("results", f"bench_infer_{bundle_name}_{time.strftime('%Y%m%d-%H%M%S')}.json")
    argv = ["diffusionlm-bench-infer", "--bundle", bundle, "--config", BENCH_CONFIG, *BENCH_ARGS, *extra,
            "--output", out]
    session.run(f"mkdir -p {quote_remote_path(posixpath.dirname(out))}", "create results dir")
    session.run(f"{venv_prefix(session)}cd {quote_remote_path(session.layout.src)} && {join_command(argv)}",
                "diffusionlm-bench-infer", stream=True)
    return out


def fetch_file(session: RemoteSession, remote: str, local: Path) -> Path:
    """Copy one file from the device to exactly `local` (parents created)."""
    local.parent.mkdir(parents=True, exist_ok=True)
    session.sftp().get(remote, str(local))
    print(f"[remote] fetched {remote} -> {local}")
    return local

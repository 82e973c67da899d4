"""`just deploy-jetson` / `just bench-jetson` on the throwaway sshd standing in for the Jetson: a tiny exported
bundle deployed with the kernels built and parity-checked there (CPU ops), benchmarked there, its JSON fetched
and read back; and JETSON_* settings read on their own, bad ones refused before anything is contacted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from remote.errors import SettingsError
from remote.jetson import jetson_settings
from tests.remote.conftest import REPO_ROOT, SshServer


def jetson_env(server: SshServer, **extra: str) -> dict[str, str]:
    """The test server as JETSON_* (no REMOTE_* at all: the Jetson verbs must not need them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMOTE_", "PRIME_", "JETSON_"))}
    env.update(JETSON_HOST="127.0.0.1", JETSON_USER=server.user, JETSON_PORT=str(server.port),
               JETSON_KEY=str(server.key), JETSON_ROOT=str(server.remote_root / "jetson"),
               JETSON_KNOWN_HOSTS=str(server.known_hosts), JETSON_STRICT_HOST_KEYS="yes",
               JETSON_STATE_DIR=str(server.state_dir), JETSON_PYTHON=sys.executable, JETSON_RETRIES="0",
               PYTHONPATH=str(REPO_ROOT))  # the entry point must run this checkout's code, wherever it is installed
    env.update(extra)
    return env


def just(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["just", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_settings_come_from_jetson_variables_only(tmp_path: Path) -> None:
    s = jetson_settings({"JETSON_HOST": "orin.local", "JETSON_USER": "nano", "JETSON_PORT": "2222",
                         "REMOTE_HOST": "gpu@203.0.113.7", "REMOTE_PORT": "22"}, dotenv_path=None)
    assert (s.destination, s.port, s.root, s.venv_system_site) == ("nano@orin.local", 2222, "~/diffusionlm", True)
    dotenv = tmp_path / ".env"
    dotenv.write_text("JETSON_HOST=me@orin.local\nJETSON_ROOT=/opt/dlm/\n")
    s = jetson_settings({}, dotenv_path=dotenv)
    assert (s.destination, s.root) == ("me@orin.local", "/opt/dlm")
    with pytest.raises(SettingsError, match=r"JETSON_KEY=.*does not exist"):
        jetson_settings({"JETSON_HOST": "h", "JETSON_KEY": str(tmp_path / "none")}, dotenv_path=None)
    with pytest.raises(SettingsError, match="JETSON_PORT=70000 is out of range"):
        jetson_settings({"JETSON_HOST": "h", "JETSON_PORT": "70000"}, dotenv_path=None)


@pytest.mark.parametrize("verb", ["deploy-jetson", "bench-jetson"])
def test_missing_jetson_host_exits_2_naming_it(verb: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JETSON_")}
    env["REMOTE_HOST"] = "gpu@127.0.0.1"  # the training host's settings are no substitute
    out = subprocess.run([sys.executable, "-m", "cli.remote", "--dotenv", str(tmp_path / "none.env"), verb,
                          f"bundle={tmp_path}"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "JETSON_HOST is not set" in out.stderr


@pytest.mark.slow
def test_deploy_build_parity_bench_and_fetch(sshd: SshServer, tmp_path: Path) -> None:
    from torch.utils.cpp_extension import is_ninja_available

    if shutil.which(os.environ.get("CXX", "c++")) is None or not is_ninja_available():
        pytest.skip("no C++ compiler or ninja: the kernels cannot be built on the stand-in host")
    from cli.export import main as export
    from tests.diffusionlm.export.runs import trained_run

    run = trained_run(tmp_path / "runs")
    bundle = tmp_path / "tiny bundle"  # a space: the path must reach the remote shell quoted
    assert export(["--checkpoint", str(run), "--output", str(bundle), "--length", "32", "--target", "generic"]) == 0
    env = jetson_env(sshd)

    deployed = just(env, "deploy-jetson", f"bundle={bundle}")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "parity: ok: compiled ops vs PyTorch fallbacks on cpu" in deployed.stdout
    root = sshd.remote_root / "jetson"
    assert (root / "src" / "csrc").is_dir() and list((root / "src" / "csrc" / "build").glob("*.so"))
    remote_bundle = root / "bundles" / bundle.name
    assert sorted(p.name for p in remote_bundle.iterdir()) == sorted(p.name for p in bundle.iterdir())

    out = tmp_path / "fetched" / "bench.json"
    tiny = "--gen-len 16,32 --steps 2,4 --reps 1 --warmup 0"
    benched = just(env, "bench-jetson", f"bundle={bundle.name}", f"output={out}", f"args={tiny}")
    assert benched.returncode == 0, benched.stdout + benched.stderr
    doc = json.loads(out.read_text())
    record = doc["results"][0]
    assert record["config"]["model"] == f"bundle {remote_bundle}" and record["config"]["dtype"] == "float16"
    assert [(f["gen_len"], f["steps"]) for f in record["figures"]] == [(16, 2), (16, 4), (32, 2), (32, 4)]
    assert record["memory_estimate"]["budget_bytes"] == 6 * 2**30  # the Orin Nano's 8 GiB less its reserve
    for fig in record["figures"]:
        assert fig["batch"] == 1 and fig["tokens_per_s"] > 0
        assert fig["estimate"]["device"] == "jetson-orin-nano-8gb" and fig["estimate"]["floor_ms_per_step"] > 0
    assert record["kernels"]["csrc"] != "off" or "csrc" in record["kernels"]

    missing = just(env, "bench-jetson", "bundle=absent", f"output={tmp_path / 'x.json'}")
    assert missing.returncode == 2 and "deploy-jetson" in missing.stderr

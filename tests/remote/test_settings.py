"""Settings, ssh config, naming, quoting and retries: no network needed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cli.remote import build_parser, translate_key_values
from remote.errors import HostUnreachableError, SettingsError
from remote.layout import join_command, quote_remote_path
from remote.naming import session_name, validate_run_name
from remote.session import with_retries
from remote.settings import load_settings
from remote.sshconfig import render_ssh_config
from remote.training import plan_launch, split_extra


def test_missing_host_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="REMOTE_HOST is not set"):
        load_settings(env={}, dotenv_path=tmp_path / "absent.env")


def test_dotenv_and_alias_and_environment_precedence(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PRIME_HOST=ubuntu@gpu.example.org\nREMOTE_PORT=2222\nREMOTE_ROOT=/data/dlm/\n")
    s = load_settings(env={}, dotenv_path=dotenv)
    assert (s.user, s.host, s.port, s.root) == ("ubuntu", "gpu.example.org", 2222, "/data/dlm")
    s = load_settings(env={"REMOTE_HOST": "me@other:2200", "REMOTE_JUMP": "bastion"}, dotenv_path=dotenv)
    assert (s.user, s.host, s.port, s.jump) == ("me", "other", 2222, "bastion")  # REMOTE_PORT from .env wins
    with pytest.raises(SettingsError, match="out of range"):
        load_settings(env={"REMOTE_HOST": "h", "REMOTE_PORT": "70000"}, dotenv_path=None)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(env={"REMOTE_HOST": "h", "REMOTE_KEY": str(tmp_path / "nokey")}, dotenv_path=None)


def test_ssh_config_carries_every_setting(tmp_path: Path) -> None:
    key = tmp_path / "my key"
    key.write_text("x")
    s = load_settings(
        env={"REMOTE_HOST": "u@h", "REMOTE_PORT": "2022", "REMOTE_KEY": str(key), "REMOTE_JUMP": "j@bastion"},
        dotenv_path=None,
    )
    text = render_ssh_config(s)
    for line in ("HostName h", "User u", "Port 2022", f'IdentityFile "{key}"', "ProxyJump j@bastion", "BatchMode yes"):
        assert line in text


@pytest.mark.parametrize("name", ["a b", "x;y", "x; rm -rf ~", "$(id)", "`id`", "it's", "a.b:c"])
def test_quoting_reaches_the_shell_verbatim(name: str) -> None:
    out = subprocess.run(
        ["bash", "-c", f"printf '%s|' {join_command([name, 'z'])} {quote_remote_path('/tmp/' + name)}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout == f"{name}|z|/tmp/{name}|"
    home = subprocess.run(["bash", "-c", f"printf %s {quote_remote_path('~/' + name)}"], capture_output=True, text=True)
    assert home.stdout == str(Path.home()) + "/" + name


def test_run_and_session_names() -> None:
    assert session_name("tiny-1") == "dlm-tiny-1"
    a, b = session_name("x;y"), session_name("x y")
    assert a != b and all(c.isalnum() or c in "-_" for c in a + b)
    for bad in ("", "a/b", "..", "-rf", "a\nb"):
        with pytest.raises(SettingsError):
            validate_run_name(bad)


def test_just_style_key_values_become_options() -> None:
    p = build_parser()
    assert translate_key_values(p, ["train", "config=a b.toml", "extra=--set x=1", "run=r;1", "--force"]) == [
        "train", "--config=a b.toml", "--extra=--set x=1", "--run=r;1", "--force",
    ]  # fmt: skip
    assert translate_key_values(p, ["fetch", "any_file=runs/a", "dest=out"]) == ["fetch", "runs/a", "--dest=out"]
    assert translate_key_values(p, ["exec", "--", "echo", "config=1"]) == ["exec", "--", "echo", "config=1"]
    assert translate_key_values(p, ["logs", "bogus=1"]) == ["logs", "bogus=1"]  # unknown keys stay (argparse errors)


def test_train_plan_validates_locally(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="config=<toml>"):
        split_extra("--config other.toml")
    plan, overrides = plan_launch(None, "--set logging.backend=wandb --set training.seed=3", "r 1;x")
    assert plan.wandb and overrides == ["logging.backend=wandb", "training.seed=3"]
    assert plan.argv[-2:] == ["--set", "logging.run_name=r 1;x"] and plan.argv[0] == "diffusionlm-train"
    assert plan_launch(None, "", "n", "ddp")[0].argv[0] == "diffusionlm-train-ddp"
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nd_model = -1\n")
    with pytest.raises(SettingsError, match="d_model"):
        plan_launch(bad, "", None)


def test_retries_back_off_then_succeed_or_give_up() -> None:
    s = load_settings(env={"REMOTE_HOST": "h", "REMOTE_RETRIES": "2", "REMOTE_BACKOFF_S": "0.01"}, dotenv_path=None)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise HostUnreachableError("dropped")
        return "ok"

    assert with_retries(s, "step", flaky) == "ok" and len(calls) == 3
    calls.clear()

    def down() -> str:
        calls.append(1)
        raise HostUnreachableError("down")

    with pytest.raises(HostUnreachableError):
        with_retries(s, "step", down)
    assert len(calls) == 3

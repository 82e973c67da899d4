"""Every shipped config validates; bad configs fail with exit code 2 and name the offending setting."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from config import ConfigError, config_to_toml, load_config
from config.schema import MODEL_SIZES

REPO = Path(__file__).resolve().parents[2]
# Every TOML config the project ships: the entry points' defaults and the benchmark presets.
SHIPPED = sorted([*Path(str(resources.files("config") / "resources")).glob("*.toml"),
                  *(REPO / "benchmarking" / "presets").glob("*.toml")])


def test_there_are_shipped_configs() -> None:
    names = {p.name for p in SHIPPED}
    assert {"train.toml", "train_ddp.toml", "infer.toml", "small.toml", "base.toml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_round_trips(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path, environ={})
    again = tmp_path / "again.toml"
    again.write_text(config_to_toml(cfg))
    assert load_config(again, environ={}) == cfg


def test_named_sizes_fill_dimensions_and_explicit_fields_win() -> None:
    for name, (d, n_l, n_h) in MODEL_SIZES.items():
        cfg = load_config(None, [f"model.size={name}"])
        assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads) == (d, n_l, n_h)
    cfg = load_config(None, ["model.size=small", "model.n_layers=2"])
    assert (cfg.model.d_model, cfg.model.n_layers) == (384, 2)


def test_overrides_are_typed_by_the_schema() -> None:
    cfg = load_config(None, ["training.max_train_iteration=50", "optimizer.lr=3e-4", "data.packing=false",
                             "logging.run_name=abc", "optimizer.betas=[0.8, 0.9]"])
    assert cfg.training.max_train_iteration == 50
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.data.packing is False
    assert cfg.logging.run_name == "abc"
    assert cfg.optimizer.betas == (0.8, 0.9)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["training.max_stpes=3"], "training.max_stpes: Extra inputs are not permitted"),
        (["training.max_train_iteration=abc"], "training.max_train_iteration"),
        (["model.d_model=100", "model.n_heads=3"], "divisible by n_heads"),
        (["objective.name=sdd"], "unknown objective 'sdd' (registered: "),
        (["model.family=rwkv"], "unknown model family 'rwkv' (registered: transformer"),
        (["objective.schedule=quadratic"], "objective.schedule"),
        (["model.size=small", "model.bogus=1"], "model.bogus: Extra inputs are not permitted"),
        (["kernels.attention=fa3"], "kernels.attention"),
        (["optimizer.optimizer_name=sgd"], "optimizer.optimizer_name"),
        (["data.source=files"], "data.data_files"),
        (["profiling.start_step=5"], "profiling.stop_step"),
        (["model.mask_token_id=0"], "distinct"),
        (["bogus.key=1"], "bogus: Extra inputs are not permitted"),
    ],
)
def test_bad_values_name_the_setting(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert needle in str(err.value)


def test_malformed_override_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(None, ["training.max_train_iteration"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[training\nmax_train_iteration = 3\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.train", *args], capture_output=True, text=True, timeout=120)


def test_cli_exits_2_without_traceback_on_bad_config(tmp_path: Path) -> None:
    typo = _run_cli("--set", "training.max_stpes=3")
    assert typo.returncode == 2
    assert "training.max_stpes: Extra inputs are not permitted" in typo.stderr
    assert "Traceback" not in typo.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nd_model = 'wide'\n")
    res = _run_cli("--config", str(bad))
    assert res.returncode == 2 and "model.d_model" in res.stderr and "Traceback" not in res.stderr
    missing = _run_cli("--config", str(tmp_path / "missing.toml"))
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def test_cli_print_config_prints_resolved_toml_and_exits_0(tmp_path: Path) -> None:
    res = _run_cli("--print-config", "--set", "model.size=small", "--set", "training.max_train_iteration=7")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "printed.toml"
    out.write_text(res.stdout)
    cfg = load_config(out)
    assert cfg.model.d_model == 384 and cfg.training.max_train_iteration == 7
    assert not (tmp_path / "runs").exists()


def test_text_settings_stay_text_even_when_they_look_like_numbers() -> None:
    cfg = load_config(None, ["logging.run_name=inf", "inference.prompt=123", "optimizer.grad_clip=inf"])
    assert cfg.logging.run_name == "inf" and cfg.inference.prompt == "123"
    assert cfg.optimizer.grad_clip == float("inf")


def test_list_settings_parse_as_lists() -> None:
    cfg = load_config(None, ['data.data_files=["a.jsonl", "b.jsonl"]', "data.source=files", "wandb.tags=[\"x\"]"])
    assert cfg.data.data_files == ["a.jsonl", "b.jsonl"] and cfg.wandb.tags == ["x"]

"""Model families and objectives are chosen by name; each validates its own section; an objective refuses
a family it cannot train; older `[diffusion]` sections still load; the environment's debugging overrides
sit between the config file and `--set`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from config import ConfigError, load_config, registry
from config.model import ModelConfig, TransformerConfig
from config.objective import MDLMConfig


def test_defaults_are_the_transformer_and_mdlm() -> None:
    cfg = load_config(None, environ={})
    assert isinstance(cfg.model, TransformerConfig) and cfg.model.family == "transformer"
    assert isinstance(cfg.objective, MDLMConfig) and cfg.objective.name == "mdlm"


def test_an_objective_refuses_a_family_it_cannot_train() -> None:
    class OtherConfig(ModelConfig):
        family: Literal["other"] = "other"

    registry.register_family("other", OtherConfig, lambda cfg, kernels: None)
    try:
        with pytest.raises(ConfigError, match=r"objective 'mdlm' cannot train model family 'other' "
                                              r"\(it trains: transformer\)"):
            load_config(None, ["model.family=other"], environ={})
    finally:
        del registry.FAMILIES["other"]


def test_registration_checks_the_config_class() -> None:
    with pytest.raises(TypeError, match=r"must subclass config\.model\.ModelConfig"):
        registry.register_family("bad", MDLMConfig, "x:y")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`family` default must be 'bad'"):
        registry.register_family("bad", TransformerConfig, "x:y")
    assert "bad" not in registry.FAMILIES


def test_an_older_diffusion_section_loads_as_the_mdlm_objective(tmp_path: Path) -> None:
    old = tmp_path / "old.toml"
    old.write_text('[model]\nsize = "tiny"\n\n[diffusion]\nschedule = "cosine"\neps = 0.01\n')
    cfg = load_config(old, environ={})
    assert cfg.objective.name == "mdlm" and cfg.objective.schedule == "cosine" and cfg.objective.eps == 0.01
    both = tmp_path / "both.toml"
    both.write_text('[diffusion]\neps = 0.01\n\n[objective]\nname = "mdlm"\n')
    with pytest.raises(ConfigError, match=r"either \[objective\] or the older \[diffusion\]"):
        load_config(both, environ={})


def test_training_configs_do_not_check_inference_lengths() -> None:
    cfg = load_config(None, ["model.context_length=64", "inference.total_length=999"], environ={})
    assert cfg.inference.total_length == 999  # checked against the model being sampled, when sampling


def test_precedence_is_set_then_environment_then_file(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text('[kernels]\ntriton = "off"\nmlp = "pytorch"\n\n[profiling]\nnvtx = false\n')
    assert load_config(path, environ={}).kernels.triton == "off"
    env = {"DIFFUSIONLM_TRITON": "interpret", "DIFFUSIONLM_NVTX": "1", "DIFFUSIONLM_NVTX_LEVEL": "fine"}
    cfg = load_config(path, environ=env)
    assert cfg.kernels.triton == "interpret" and cfg.kernels.mlp == "pytorch"
    assert cfg.profiling.nvtx is True and cfg.profiling.nvtx_level == "fine"
    cfg = load_config(path, ["kernels.triton=auto", "profiling.nvtx=false"], environ=env)
    assert cfg.kernels.triton == "auto" and cfg.profiling.nvtx is False
    # the older spelling of the Triton switch keeps its meaning
    assert load_config(None, environ={"DIFFUSIONLM_TRITON": "0"}).kernels.triton == "off"
    assert load_config(None, environ={"DIFFUSIONLM_MLP": ""}).kernels.mlp == "auto"  # empty: unset


@pytest.mark.parametrize(("name", "value", "setting"), [
    ("DIFFUSIONLM_TRITON", "maybe", "kernels.triton"), ("DIFFUSIONLM_ATTENTION", "fa3", "kernels.attention"),
    ("DIFFUSIONLM_NVTX", "loud", "profiling.nvtx")])
def test_a_bad_environment_value_names_the_variable_and_the_setting(name: str, value: str, setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name}='{value}' \(overrides {setting}\): expected one of"):
        load_config(None, environ={name: value})


def test_every_registered_objective_names_families_that_exist() -> None:
    for plugin in registry.OBJECTIVES.values():
        assert plugin.families and set(plugin.families) <= set(registry.FAMILIES), plugin.name


@pytest.mark.parametrize(("overrides", "needle"), [
    (["optimizer.lr=inf"], "optimizer.lr: Input should be a finite number"),
    (["optimizer.lr=nan"], "optimizer.lr: Input should be a finite number"),
    (["model.context_length=100000"], "model.context_length: Input should be less than or equal to 65536"),
    (["model.context_length=1"], "model.context_length: Input should be greater than or equal to 2"),
])
def test_bounds_that_would_waste_a_run_are_config_errors(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides, environ={})
    assert needle in str(err.value)
    assert "inference" not in str(err.value), "a training setting's error names the training setting"


def test_no_clipping_may_be_written_as_infinity() -> None:
    assert load_config(None, ["optimizer.grad_clip=inf"], environ={}).optimizer.grad_clip == float("inf")

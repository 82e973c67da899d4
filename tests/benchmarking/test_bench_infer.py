"""diffusionlm-bench-infer on CPU: real sampling from a fresh and from a trained model, valid JSON, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarking import bench_infer
from config import load_config
from diffusionlm.training import Trainer

FRESH = ["--size", "tiny", "--set", "model.n_layers=1", "--context-length", "32", "--vocab-size", "512",
         "--gen-len", "24", "--reps", "2", "--warmup", "1"]


def test_fresh_model_grid_with_reference_ratios_and_results_file(tmp_path: Path, capsys) -> None:
    ref = tmp_path / "ref.jsonl"
    ref.write_text("\n".join(json.dumps(r) for r in [
        {"bench": "sample", "config": "tiny", "batch": 2, "steps": 8, "gen_len": 24, "tokens_per_s": 100.0},
        {"bench": "sample", "config": "other", "batch": 1, "steps": 4, "gen_len": 24, "tokens_per_s": 1.0},
        {"bench": "train", "config": "tiny", "tokens_per_s": 5.0},
    ]) + "\n")
    out = tmp_path / "res.json"
    argv = [*FRESH, "--batch-sizes", "1,2", "--steps", "4,8", "--label", "tiny", "--reference", str(ref),
            "--output", str(out)]
    assert bench_infer.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["bench"] == "infer" and record["config"]["n_layers"] == 1 and record["config"]["dtype"] == "float32"
    grid = [(f["batch"], f["steps"]) for f in record["figures"]]
    assert grid == [(1, 4), (1, 8), (2, 4), (2, 8)]
    for f in record["figures"]:
        assert f["tokens_per_s"] == pytest.approx(f["batch"] * 24 / (f["latency_ms"]["median"] / 1e3))
        assert f["step_ms"] == pytest.approx(f["latency_ms"]["median"] / f["steps"])
    matched = [f for f in record["figures"] if "reference" in f]
    assert [(f["batch"], f["steps"]) for f in matched] == [(2, 8)]  # only the same config, batch, steps, length
    assert matched[0]["ratio_tokens_per_s"] == pytest.approx(matched[0]["tokens_per_s"] / 100.0)
    assert json.loads(out.read_text())["results"][0]["figures"] == record["figures"]


@pytest.mark.slow
def test_trained_checkpoint_in_bf16(tmp_path: Path, capsys) -> None:
    cfg = load_config(None, [
        "model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=512", "model.context_length=32",
        "tokenizer.vocab_size=512", "tokenizer.train_docs=300", "inference.total_length=32", "data.batch_size=4",
        "training.max_train_iteration=4", "training.skip_validation=true", "training.num_samples=0",
        "model.time_conditioning=adaln", "logging.backend=noop", "logging.progress_bar=off",
        f"logging.output_dir={tmp_path}", "logging.run_name=r"])
    Trainer(cfg).fit()
    argv = ["--checkpoint", str(tmp_path / "r"), "--gen-len", "32", "--batch-sizes", "2", "--steps", "8",
            "--reps", "1", "--precision", "bf16"]
    assert bench_infer.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["config"]["dtype"] == "bfloat16" and record["config"]["model"].endswith("r")
    assert record["figures"][0]["tokens_per_s"] > 0


def test_bad_input_is_refused_with_a_message(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit, match="checkpoint path does not exist"):
        bench_infer.main(["--checkpoint", str(tmp_path / "missing")])
    assert bench_infer.main([*FRESH, "--gen-len", "64", "--batch-sizes", "1", "--steps", "2"]) == 2
    assert "exceeds the model's context_length 32" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        bench_infer.main([*FRESH, "--batch-sizes", "1,x"])
    assert exc.value.code == 2 and "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no sample record with config 'tiny'"):
        ref = tmp_path / "ref.jsonl"
        ref.write_text('{"bench": "train", "config": "tiny"}\n')
        bench_infer.main([*FRESH, "--label", "tiny", "--reference", str(ref)])


def test_a_preset_model_is_built_by_name_and_its_kernels_recorded(capsys) -> None:
    argv = ["--preset", "small", "--set", "model.n_layers=1", "--set", "model.context_length=32", "--gen-len", "8",
            "--batch-sizes", "1", "--steps", "2", "--reps", "1", "--warmup", "0", "--precision", "fp32"]
    assert bench_infer.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["label"] == "small" and record["config"]["model"] == "random init, preset small"
    assert record["config"]["d_model"] == 384 and record["config"]["vocab_size"] == 8192
    assert record["kernels"]["triton"] == "off" and record["kernels"]["attention"] == "sdpa"


def test_the_physical_floor_of_a_step_counts_weights_once_and_every_position() -> None:
    from diffusionlm.models import build_model

    cfg = load_config(None, ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=512",
                             "tokenizer.vocab_size=512"],
                      environ={}).model
    model = build_model(cfg)
    floor = bench_infer.step_floor(model, cfg, batch=2, length=16, dtype_bytes=2, device="NVIDIA H100 80GB HBM3")
    params = sum(p.numel() for p in model.parameters())
    body = model.num_params(include_embeddings=False)
    assert floor["weight_bytes"] == 2 * params
    assert floor["flops"] == 2 * body * 32 + 4 * 2 * 32 * 16 * 32 + 2 * 32 * 512 * 32
    assert floor["memory_ms"] == pytest.approx(2 * params / 3.35e12 * 1e3)
    assert floor["floor_ms"] == max(floor["memory_ms"], floor["compute_ms"]) and floor["bound"] == "memory"
    assert "floor_ms" not in bench_infer.step_floor(model, cfg, 2, 16, 4, "cpu x86_64 x2"), "no datasheet for a CPU"


def test_a_setting_over_the_memory_budget_is_refused_before_loading(capsys, monkeypatch) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded although the setting was refused")

    monkeypatch.setattr(bench_infer, "build_model", no_loading)
    argv = [*FRESH, "--gen-len", "16,32", "--batch-sizes", "1,4", "--steps", "2", "--memory-budget-gb", "0.001"]
    assert bench_infer.main(argv) == 2
    err = capsys.readouterr().err
    assert "--memory-budget-gb" in err and "batch 4 x gen-len 32 in float32 needs an estimated" in err
    assert "more than the budget of 0.00 GiB (--memory-budget-gb)" in err


def test_jetson_config_lengths_estimate_and_budget(capsys) -> None:
    from benchmarking.common import device_memory, peak_bandwidth, peak_flops

    assert (peak_flops("jetson-orin-nano-8gb"), peak_bandwidth("jetson-orin-nano-8gb")) == (10e12, 68e9)
    argv = [*FRESH, "--config", "config/resources/bench_infer_jetson.toml", "--gen-len", "8,16", "--batch-sizes",
            "1", "--steps", "2", "--reps", "1", "--warmup", "0", "--estimate-device", "jetson-orin-nano-8gb"]
    assert bench_infer.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["config"]["dtype"] == "float16"  # from the config's inference.precision
    assert [f["gen_len"] for f in record["figures"]] == [8, 16]
    assert record["memory_estimate"]["budget_bytes"] == device_memory("jetson-orin-nano-8gb") == 6 * 2**30
    for fig in record["figures"]:
        est, floor = fig["estimate"], fig["floor_per_step"]
        ms = max(floor["weight_bytes"] / 68e9, floor["flops"] / 10e12) * 1e3
        assert est["floor_ms_per_step"] == pytest.approx(ms)
        assert est["tokens_per_s_ceiling"] == pytest.approx(fig["gen_len"] / (fig["steps"] * ms / 1e3))


def test_unknown_estimate_device_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as e:
        bench_infer.main([*FRESH, "--estimate-device", "toaster"])
    assert e.value.code == 2


@pytest.mark.slow
def test_an_export_bundle_is_verified_and_benchmarked(tmp_path: Path, capsys) -> None:
    from cli.export import main as export
    from tests.diffusionlm.export.runs import trained_run

    bundle = tmp_path / "bundle"
    assert export(["--checkpoint", str(trained_run(tmp_path)), "--output", str(bundle), "--length", "32",
                   "--target", "generic"]) == 0
    capsys.readouterr()
    argv = ["--bundle", str(bundle), "--gen-len", "16", "--batch-sizes", "1", "--steps", "2", "--reps", "1",
            "--warmup", "0", "--precision", "fp16"]
    assert bench_infer.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["config"]["model"] == f"bundle {bundle}" and record["config"]["dtype"] == "float16"
    assert record["config"]["params"] == json.loads((bundle / "manifest.json").read_text())["model"]["num_params"]
    (bundle / "config.toml").write_text((bundle / "config.toml").read_text() + "\n# edited\n")
    with pytest.raises(SystemExit, match=r"config\.toml"):
        bench_infer.main(argv)

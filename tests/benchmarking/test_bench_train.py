"""diffusionlm-bench-train on CPU: a real Trainer, real data, valid JSON, clear errors on bad input."""

import json

import pytest

from benchmarking import bench_train
from benchmarking.common import device_slug, percentile, write_result
from config.schema import Config

TINY = ["--size", "tiny", "--context-length", "32", "--batch-size", "2", "--steps", "2", "--warmup", "1",
        "--set", "model.n_layers=1", "--set", "tokenizer.train_docs=400", "--set", "data.builtin_num_stories=400"]


def test_cpu_run_prints_json_appends_results_and_compares_with_reference(tmp_path, capsys):
    ref = tmp_path / "ref.jsonl"
    ref.write_text("compiling...\n" + json.dumps({"bench": "train", "config": "tiny", "tokens_per_s": 10.0,
                                                   "step_ms": 100.0}) + "\n")
    out = tmp_path / "results.json"
    argv = [*TINY, "--label", "tiny", "--reference", str(ref), "--output", str(out)]
    assert bench_train.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["bench"] == "train" and record["timer"] == "perf_counter"
    assert record["config"]["d_model"] == 256 and record["config"]["n_layers"] == 1
    assert record["config"]["batch_size"] == 2 and record["config"]["context_length"] == 32
    assert record["steps"] == 2 and record["tokens_per_s"] > 0
    assert 0 < record["step_ms"]["median"] <= record["step_ms"]["p90"] <= record["step_ms"]["max"]
    assert 0 < record["mask_fraction"] < 1
    assert record["mfu"] is None and record["peak_flops"] is None  # no known peak for a CPU
    assert "6 * N_body" in record["flop_formula"]
    assert 0 <= record["data_wait_fraction"] < 1
    assert len(record["step_ms_each"]) == 2 and max(record["step_ms_each"]) == pytest.approx(
        record["step_ms"]["max"], abs=1e-3)
    # the trainer's own gc.collect() after the first (warm-up) step is one full pass
    assert record["gc_passes"]["gen2"]["count"] >= 1 and record["gc_passes"]["gen2"]["max_ms"] > 0
    assert record["config"]["residual_in_fp32"] is True
    assert record["config"]["attention"] == "sdpa", "no FlashAttention-4 backward on a CPU"
    assert record["gpu_telemetry"] is None  # no GPU to sample
    ratio = record["ratios_vs_reference"]["tokens_per_s"]
    assert ratio == pytest.approx(record["tokens_per_s"] / 10.0)
    doc = json.loads(out.read_text())
    assert [r["label"] for r in doc["results"]] == ["tiny"]
    write_result({"label": "again"}, out, "bench_train", doc["device"])
    assert [r["label"] for r in json.loads(out.read_text())["results"]] == ["tiny", "again"]


def test_flops_count_body_attention_and_masked_head_rows():
    cfg = Config().model  # tiny: d256 L4, vocab 8192 (untouched defaults), T256
    n_body = 1000
    flops = bench_train.step_flops(cfg, n_body, positions=10, head_rows=4)
    d, L, T, V = cfg.d_model, cfg.n_layers, cfg.context_length, cfg.vocab_size
    assert flops == 6 * n_body * 10 + 12 * L * d * T * 10 + 6 * d * V * 4


def test_body_params_exclude_embedding_and_head_tied_or_not():
    from diffusionlm.models import DiffusionTransformer

    for tie in (True, False):
        cfg = Config().model
        cfg.tie_embeddings, cfg.n_layers = tie, 1
        model = DiffusionTransformer(cfg)
        blocks = sum(p.numel() for p in model.blocks.parameters()) + model.norm.weight.numel()
        assert model.num_params(include_embeddings=False) == blocks  # the body the FLOP formula counts


def test_a_preset_is_passed_by_name_and_recorded(capsys):
    argv = ["--preset", "small", "--context-length", "32", "--batch-size", "2", "--steps", "1", "--warmup", "0",
            "--no-compile", "--precision", "fp32", "--set", "model.n_layers=1", "--set", "tokenizer.train_docs=300",
            "--set", "data.builtin_num_stories=300", "--set", "tokenizer.vocab_size=512"]
    assert bench_train.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["label"] == "small" and record["config"]["preset"] == "small"
    assert record["config"]["d_model"] == 384 and record["config"]["vocab_size"] == 8192
    assert record["config"]["optimizer"] == "adamw" and record["config"]["residual_in_fp32"] is False
    assert record["kernels"].pop("csrc") in ("on", "off")  # on once this process has built csrc/ (test_csrc_*.py)
    assert record["kernels"] == {"triton": "off", "attention": "sdpa", "mlp": "pytorch",
                                 "fa4_min_scores": 1 << 27, "quack_min_gate_up": 150_000_000}
    with pytest.raises(SystemExit) as exc:
        bench_train.main(["--preset", "huge"])
    assert exc.value.code == 2 and "known presets: base, medium, small" in capsys.readouterr().err


def test_missing_shards_dir_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match=r"no meta\.json"):
        bench_train.main([*TINY, "--shards", str(tmp_path / "nope")])


def test_bad_config_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_train.main([*TINY, "--set", "model.d_model=-3"])
    assert exc.value.code == 2
    assert "model.d_model" in capsys.readouterr().err


def test_reference_without_label_or_record_is_refused(tmp_path, capsys):
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"bench": "train", "config": "small", "tokens_per_s": 1.0}) + "\n")
    with pytest.raises(SystemExit) as exc:
        bench_train.main([*TINY, "--reference", str(ref)])
    assert exc.value.code == 2 and "--label" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no train record with config 'base'"):
        bench_train.main([*TINY, "--reference", str(ref), "--label", "base"])


def test_write_result_never_overwrites_a_foreign_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"something": "else"}')
    with pytest.raises(ValueError, match="not a results document"):
        write_result({"a": 1}, path, "bench_train", "cpu")
    assert json.loads(path.read_text()) == {"something": "else"}
    path.write_text("not json")
    with pytest.raises(ValueError, match="not JSON"):
        write_result({"a": 1}, path, "bench_train", "cpu")


def test_percentile_and_device_slug():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 90) == pytest.approx(9.1)
    assert device_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert device_slug("NVIDIA H200") == "h200"
    assert device_slug("cpu x86_64 x2") == "cpu-2core"

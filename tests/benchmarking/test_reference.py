"""benchmarking/reference.py on CPU: real training steps and sampling in a subprocess, JSON lines that the
benches read, clear refusals of bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarking import bench_infer, bench_train

REPO = Path(__file__).resolve().parents[2]
TINY = ["--device", "cpu", "--d-model", "64", "--n-layers", "2", "--n-heads", "2", "--context-length", "32",
        "--vocab-size", "128", "--batch-size", "4"]


def _reference(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarking.reference", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_training_line_has_the_fields_the_bench_reads(tmp_path: Path) -> None:
    done = _reference("--preset", "small", *TINY, "--steps", "3", "--warmup", "1", "--no-compile")
    assert done.returncode == 0, done.stderr[-3000:]
    (rec,) = _json_lines(done.stdout)
    assert rec["bench"] == "train" and rec["ref"] == "benchmarking/reference.py" and rec["config"] == "small"
    assert rec["compile"] is False and rec["device"].startswith("cpu") and rec["peak_mem_gb"] is None
    assert rec["shape"] == {"d_model": 64, "n_layers": 2, "n_heads": 2, "context_length": 32, "vocab_size": 128,
                            "batch_size": 4}
    # embedding (tied head) + 2 blocks of qkv, out, gate/up, down (hidden 192) and 2 norms + final norm
    assert rec["params"] == 128 * 64 + 2 * (64 * 192 + 64 * 64 + 64 * 2 * 192 + 192 * 64 + 2 * 64) + 64
    assert rec["tokens_per_s"] > 0 and rec["step_ms"] > 0 and rec["steps"] == 3
    flops_per_token = 6 * rec["params"] + 12 * 2 * 64 * 32  # the head at every position + full T x T attention
    assert rec["achieved_tflops"] == pytest.approx(rec["tokens_per_s"] * flops_per_token / 1e12)
    assert math.isfinite(rec["loss_first"]) and math.isfinite(rec["loss_last"]) and rec["loss_first"] > 0
    # bench-train reads the line back and computes its ratios from it
    ref_file = tmp_path / "ref.jsonl"
    ref_file.write_text(done.stdout)
    ref = bench_train.load_reference(str(ref_file), "small")
    record = {"tokens_per_s": 2 * rec["tokens_per_s"], "step_ms": {"median": rec["step_ms"] / 2}}
    bench_train.add_reference(record, ref)
    assert record["ratios_vs_reference"] == pytest.approx({"tokens_per_s": 2.0, "step_time_speedup": 2.0})


def test_sample_lines_cover_the_grid_and_leave_no_mask(tmp_path: Path) -> None:
    done = _reference("--preset", "medium", *TINY, "--sample", "--batch-sizes", "1,2", "--sample-steps", "4,8",
                      "--gen-len", "16", "--reps", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    records = _json_lines(done.stdout)
    assert [(r["batch"], r["steps"]) for r in records] == [(1, 4), (1, 8), (2, 4), (2, 8)]
    for r in records:
        assert r["bench"] == "sample" and r["config"] == "medium" and r["gen_len"] == 16
        assert r["masks_left"] == 0 and r["latency_ms"] > 0 and r["dtype"] == "float32"
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * 16 / (r["latency_ms"] / 1e3))
    ref_file = tmp_path / "ref.jsonl"
    ref_file.write_text(done.stdout)
    assert len(bench_infer.load_reference(str(ref_file), "medium")) == 4


def test_reference_imports_none_of_the_project_model_code() -> None:
    code = ("import sys, benchmarking.reference; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('diffusionlm', 'ddp', 'cli')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("args", "message"), [
    (["--preset", "huge"], "unknown preset 'huge'; known presets: base, medium, small"),
    (["--preset", "small", "--steps", "0"], "--steps, --reps and --gen-len must be >= 1"),
    (["--preset", "small", "--sample", "--gen-len", "300"], "--gen-len 300 exceeds the context length 256"),
    (["--preset", "small", "--n-heads", "5"], "must split into 5 heads of even width"),
])
def test_bad_input_exits_2_with_a_message(args: list[str], message: str) -> None:
    done = _reference(*args)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""

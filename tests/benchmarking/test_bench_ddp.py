"""diffusionlm-bench-ddp on CPU: real torchrun launches with gloo workers, valid results, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE = ["--device", "cpu", "--sizes", "tiny", "--world-sizes", "1,2", "--batch-size", "2", "--context-length", "32",
         "--steps", "3", "--warmup", "1", "--set", "model.d_model=64", "--set", "model.n_layers=2",
         "--set", "model.n_heads=2", "--set", "model.vocab_size=512", "--set", "tokenizer.vocab_size=512",
         "--set", "tokenizer.train_docs=200", "--set", "data.builtin_num_stories=400"]


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarking.bench_ddp", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.slow
def test_cpu_weak_scaling_run_writes_efficiency_memory_and_sharded_state(tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    done = _bench(*SMOKE, "--output", str(out), cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    (record,) = doc["results"]
    assert record["command"].startswith("diffusionlm-bench-ddp --device cpu")
    figures = {(f["world_size"], f["shard_optimizer_state"]): f for f in record["figures"]}
    assert sorted(figures) == [(1, False), (1, True), (2, False), (2, True)]
    for (world, shard), f in figures.items():
        assert f["global_batch"] == 2 * world and f["tokens_per_s"] > 0
        assert len(f["step_ms_each"]) == 3 and len(f["optimizer_state_bytes_per_rank"]) == world
        assert f["gpu_telemetry_per_rank"] == [None] * world  # gloo on CPUs: no GPU to sample
        assert f["weak_scaling_efficiency"] == pytest.approx(
            f["tokens_per_s"] / (world * figures[(1, shard)]["tokens_per_s"]))
    full = figures[(1, False)]["optimizer_state_bytes_per_rank"][0]
    assert figures[(2, False)]["optimizer_state_bytes_per_rank"] == [full, full]
    sharded = figures[(2, True)]["optimizer_state_bytes_per_rank"]
    assert sum(sharded) == full and max(sharded) < 0.75 * full  # each rank holds about half


def test_missing_shards_dir_exits_2_before_launching(tmp_path: Path) -> None:
    done = _bench(*SMOKE, "--shards-dir", str(tmp_path / "nope"), cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "is not a directory" in done.stderr
    assert "torchrun" not in done.stderr and "process(es)" not in done.stderr


@pytest.mark.parametrize("bad", ["1,x", "0,2", "2,,4", ""])
def test_bad_world_sizes_exit_2_with_a_message_before_launching(bad: str) -> None:
    done = _bench("--device", "cpu", "--world-sizes", bad, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2
    assert "--world-sizes" in done.stderr and "process counts of at least 1" in done.stderr
    assert "Traceback" not in done.stderr and "torchrun" not in done.stderr

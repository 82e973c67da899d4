"""`diffusionlm-train` and `diffusionlm-infer` as a user runs them: real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.diffusionlm.training.conftest import TINY
from tests.process_env import REPRODUCIBLE_ENV

# Small enough for CI, slow enough per step (~tens of ms) that a kill lands mid-run.
KILLABLE = [*TINY, "model.d_model=96", "model.context_length=128", "data.batch_size=16", "inference.total_length=64",
            "training.skip_validation=true", "training.num_samples=0", "logging.backend=console"]


def _cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _losses(run: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "metrics.loss" in rec:
            assert rec["step"] not in out, f"step {rec['step']} logged twice"
            out[rec["step"]] = rec["metrics.loss"]
    return out


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path: Path) -> None:
    n = 12
    common = [*KILLABLE, f"training.max_train_iteration={2 * n}", f"checkpoint.save_freq_iteration={n}"]
    full = subprocess.run(_cmd("cli.train", *_sets([*common, "logging.run_name=full"])), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=REPRODUCIBLE_ENV)
    assert full.returncode == 0, full.stderr

    proc = subprocess.Popen(_cmd("cli.train", *_sets([*common, "logging.run_name=cut"])), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=REPRODUCIBLE_ENV)
    ckpt_n = tmp_path / "runs" / "cut" / "checkpoints" / f"step_{n}"
    deadline = time.monotonic() + 240
    while not (ckpt_n / "meta.json").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "runs" / "cut" / "final").exists(), "the kill must land before the run ends"

    resumed = subprocess.run(_cmd("cli.train", *_sets([*common, "logging.run_name=cut"]), "--resume", "auto"),
                             cwd=tmp_path, capture_output=True, text=True, timeout=300, env=REPRODUCIBLE_ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    full_losses, cut_losses = _losses(tmp_path / "runs" / "full"), _losses(tmp_path / "runs" / "cut")
    assert sorted(cut_losses) == list(range(1, 2 * n + 1))
    assert all(cut_losses[s] == full_losses[s] for s in range(1, 2 * n + 1))
    a = load_file(tmp_path / "runs" / "full" / "final" / "model.safetensors")
    b = load_file(tmp_path / "runs" / "cut" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigint_writes_a_checkpoint_and_exits_130(tmp_path: Path) -> None:
    args = [*KILLABLE, "training.max_train_iteration=100000", "checkpoint.save_freq_iteration=100000",
            "logging.run_name=int"]
    proc = subprocess.Popen(_cmd("cli.train", *_sets(args)), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # the first metrics line: training is under way
    assert json.loads(first)["step"] >= 1
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    ckpts = list((tmp_path / "runs" / "int" / "checkpoints").glob("step_*"))
    assert len(ckpts) == 1 and (ckpts[0] / "meta.json").is_file()
    assert "--resume" in err


@pytest.mark.slow
def test_train_then_infer_from_the_export(tmp_path: Path) -> None:
    args = [*TINY, "training.max_train_iteration=6", "training.val_freq_iteration=3", "training.max_val_iteration=2",
            "checkpoint.save_freq_iteration=3", "logging.run_name=inf", "logging.backend=console"]
    res = subprocess.run(_cmd("cli.train", *_sets(args)), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert any("metrics.loss" in rec for rec in lines) and any("val.nelbo" in rec for rec in lines)
    assert "params" in res.stderr and "without embeddings" in res.stderr
    out = subprocess.run(_cmd("cli.infer", "--checkpoint", str(tmp_path / "runs" / "inf"), "--prompt", "Once upon",
                              "--set", "inference.total_length=24", "--set", "inference.steps=6",
                              "--set", "inference.num_samples=2"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("--- sample") == 2
    assert out.stdout.count("Once upon") == 2, "the prompt is kept"
    filled = subprocess.run(_cmd("cli.infer", "--checkpoint", str(tmp_path / "runs" / "inf" / "final"),
                                 "--template", "Once upon a time [MASK:12] The end.", "--strategy", "threshold",
                                 "--block-length", "4", "--steps", "12", "--top-p", "0.9"),
                            capture_output=True, text=True, timeout=120)
    assert filled.returncode == 0, filled.stderr
    assert filled.stdout.startswith("Once upon a time") and filled.stdout.rstrip().endswith("The end.")
    assert "model calls" in filled.stderr


def test_infer_errors_exit_2(tmp_path: Path) -> None:
    missing = subprocess.run(_cmd("cli.infer", "--checkpoint", str(tmp_path / "nope")), capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    nothing = subprocess.run(_cmd("cli.infer"), capture_output=True, text=True, timeout=120)
    assert nothing.returncode == 2 and "--checkpoint" in nothing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run(_cmd("cli.infer", "--checkpoint", str(empty)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no model found" in res.stderr


def test_bad_data_settings_exit_2_before_training(tmp_path: Path) -> None:
    res = subprocess.run(_cmd("cli.train", *_sets([*TINY, "data.source=files",
                                                   f"data.data_files=[{json.dumps(str(tmp_path / 'x.jsonl'))}]"])),
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "data.data_files" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("module", ["cli.train", "cli.infer"])
def test_help_works(module: str) -> None:
    res = subprocess.run(_cmd(module, "--help"), capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "100"})
    assert res.returncode == 0 and "--config" in res.stdout and "--set" in res.stdout

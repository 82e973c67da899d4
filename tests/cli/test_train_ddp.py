"""`diffusionlm-train-ddp` end to end on CPU (gloo, 2 real worker processes): the standalone launcher,
real torchrun with a worker killed by SIGKILL and restarted, and failures that must end the job."""

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

from tests.process_env import REPRODUCIBLE_ENV

STEPS, LOG_EVERY, SAVE_EVERY = 120, 10, 20
TINY_RUN = [
    f"--set={s}" for s in (
        "model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=512", "model.device=cpu",
        "tokenizer.vocab_size=512", "tokenizer.train_docs=300", "model.context_length=64",
        "inference.total_length=64", "data.batch_size=4", f"training.max_train_iteration={STEPS}",
        f"training.log_freq_iteration={LOG_EVERY}", "training.val_freq_iteration=60", "training.max_val_iteration=2",
        "training.num_samples=0", f"checkpoint.save_freq_iteration={SAVE_EVERY}", "logging.progress_bar=off",
        "logging.output_dir=runs", "ddp.nproc_per_node=2",
    )
]
FAILING_WORKER = Path(__file__).resolve().parents[1] / "ddp" / "failing_worker.py"


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _train_records(run_dir: Path) -> list[dict]:
    return [r for r in _records(run_dir) if "metrics.loss" in r]


def _torchrun(*args: str, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--max-restarts", str(restarts), *args]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted run through the console script, which launches its own 2 workers."""
    cwd = tmp_path_factory.mktemp("standalone")
    done = subprocess.run(["diffusionlm-train-ddp", *TINY_RUN], cwd=cwd, capture_output=True, text=True,
                          timeout=240, env=REPRODUCIBLE_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (cwd / "runs").iterdir()  # the launcher named the run once for both workers
    return run_dir, done


@pytest.mark.slow
def test_standalone_launch_trains_with_rank_zero_logging_and_sharded_checkpoints(reference_run) -> None:
    run_dir, done = reference_run
    out = done.stdout + done.stderr
    assert "starting 2 workers" in out and "global batch 8 sequences" in out
    assert "world size 2" in out
    # metrics.jsonl is written by rank 0 only: every logged step exactly once
    assert [r["step"] for r in _train_records(run_dir)] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert [r["step"] for r in _records(run_dir) if "val.nelbo" in r] == [60, 120]
    last = run_dir / "checkpoints" / f"step_{STEPS}"
    assert json.loads((last / "meta.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in last.glob("optimizer*.pt")) == ["optimizer_rank0.pt", "optimizer_rank1.pt"]
    assert sorted(p.name for p in last.glob("data_rank*.pt")) == ["data_rank0.pt", "data_rank1.pt"]
    assert (run_dir / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_sigkilled_worker_is_restarted_and_resumes_without_lost_or_repeated_steps(tmp_path: Path,
                                                                                   reference_run) -> None:
    run_dir = tmp_path / "runs" / "killed"
    # as the README says for torchrun with restarts: a fresh rendezvous store per attempt
    env = dict(REPRODUCIBLE_ENV, TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    proc = subprocess.Popen(_torchrun("-m", "cli.train_ddp", *TINY_RUN, "--set=logging.run_name=killed", restarts=1),
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first_checkpoint = run_dir / "checkpoints" / f"step_{SAVE_EVERY}" / "meta.json"
        deadline = time.monotonic() + 120
        while not first_checkpoint.is_file():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        victim = _worker_pid(proc.pid, local_rank=1)
        os.kill(victim, signal.SIGKILL)
        killed_at = max([r["step"] for r in _train_records(run_dir)], default=0)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert killed_at < STEPS, "the worker was killed after training ended: the test proved nothing"
    assert "resumed from" in out  # the relaunched workers continued the run, not a fresh one
    records = _train_records(run_dir)
    assert [r["step"] for r in records] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert json.loads((run_dir / "checkpoints" / f"step_{STEPS}" / "meta.json").read_text())["step"] == STEPS
    # resume is exact: the same losses and final weights as the uninterrupted run
    ref_dir, _ = reference_run
    assert [r["metrics.loss"] for r in records] == [r["metrics.loss"] for r in _train_records(ref_dir)]
    got, want = load_file(run_dir / "final" / "model.safetensors"), load_file(ref_dir / "final" / "model.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want)


def _worker_pid(launcher_pid: int, local_rank: int) -> int:
    for child in Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"LOCAL_RANK={local_rank}".encode() in environ:
            return int(child)
    raise AssertionError(f"no worker with LOCAL_RANK={local_rank} under pid {launcher_pid}")


@pytest.mark.slow
def test_a_rank_that_raises_fails_the_job_with_its_error_and_no_hang(tmp_path: Path) -> None:
    t0 = time.monotonic()
    done = subprocess.run(_torchrun(str(FAILING_WORKER), *TINY_RUN, "--set=logging.run_name=fails"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert "injected failure on rank 1" in done.stderr
    assert time.monotonic() - t0 < 120


@pytest.mark.slow
def test_bad_input_exits_2_with_the_message_from_every_launch_path(tmp_path: Path) -> None:
    done = subprocess.run(["diffusionlm-train-ddp", *TINY_RUN, "--resume", str(tmp_path / "missing")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2
    assert "no such checkpoint directory" in done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("checkpoints/step_*"))


def test_bad_config_fails_before_any_worker_starts(tmp_path: Path) -> None:
    done = subprocess.run(["diffusionlm-train-ddp", "--set", "ddp.backend=mpi"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "ddp.backend" in done.stderr and "starting" not in done.stderr


@pytest.mark.slow
def test_sigterm_to_the_launcher_checkpoints_and_exits_130(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "stopped"
    proc = subprocess.Popen(["diffusionlm-train-ddp", *TINY_RUN, "--set=logging.run_name=stopped"], cwd=tmp_path,
                            env=REPRODUCIBLE_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / f"step_{SAVE_EVERY}" / "meta.json").is_file():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "stopped by SIGTERM" in err and "--resume auto" in err
    assert "Traceback" not in err and "SignalException" not in err
    steps = sorted(int(d.name.split("_")[1]) for d in (run_dir / "checkpoints").iterdir() if d.name[5:].isdigit())
    assert steps[-1] > SAVE_EVERY, "the workers wrote a checkpoint for the step they stopped after"
    assert not (run_dir / "final").exists()

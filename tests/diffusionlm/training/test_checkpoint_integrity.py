"""Checkpoints under real faults: damaged files, a changed run, and disks that are read-only or full.

Every test starts from a copy of one real tiny run (checkpoints step_2 and step_4) or trains a fresh one, damages
something the way it happens in practice (bytes overwritten, a file cut short or deleted, a tmpfs that fills up
or is mounted read-only, a file-size limit), then checks what the user sees: the exit code, the message, which
checkpoint was resumed, and what is left on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cli.train import run_training
from config import load_config
from diffusionlm.training import Trainer, TrainingError
from diffusionlm.training import checkpoint as ckpt
from tests.diffusionlm.training.conftest import TINY

BASE = ["training.max_train_iteration=4", "checkpoint.save_freq_iteration=2", "checkpoint.keep_last=3",
        "training.skip_validation=true", "training.num_samples=0", "logging.progress_bar=off"]
REPO = Path(__file__).resolve().parents[3]


def _cfg(out: Path, *extra: str):
    return load_config(None, [*TINY, f"logging.output_dir={json.dumps(str(out / 'runs'))}", *BASE, *extra],
                       environ={})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    Trainer(_cfg(out, "logging.run_name=run")).fit()
    return out / "runs" / "run"


@pytest.fixture
def run(tmp_path: Path, trained: Path) -> Path:
    """A private copy of the trained run at tmp_path/runs/run."""
    dst = tmp_path / "runs" / "run"
    shutil.copytree(trained, dst)
    return dst


def _resume(tmp_path: Path, capsys: pytest.CaptureFixture, resume: str = "auto", *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run_training(_cfg(tmp_path, "logging.run_name=run", *extra), resume)
    return code, capsys.readouterr().err


def _snapshot(run: Path) -> dict[str, bytes]:
    """The files of the run directory itself that a refused resume must leave alone."""
    return {n: (run / n).read_bytes() for n in ("config.toml", "metrics.jsonl", "tokenizer.json")}


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


# ---------------------------------------------------------------- the manifest
def test_every_file_of_a_checkpoint_is_in_its_manifest_with_size_and_sha256(trained: Path) -> None:
    step = trained / "checkpoints" / "step_4"
    manifest = json.loads((step / "manifest.json").read_text())
    assert (manifest["step"], manifest["world_size"], manifest["hash"]) == (4, 1, "sha256")
    on_disk = {p.name for p in step.iterdir()} - {"manifest.json", "meta.json"}
    assert set(manifest["files"]) == on_disk >= {"model.pt", "optimizer.pt", "trainer.pt", "rng_rank0.pt",
                                                 "data_rank0.pt", "config.toml", "tokenizer.json"}
    for name, entry in manifest["files"].items():
        assert entry["size"] == (step / name).stat().st_size
        assert entry["sha256"] == hashlib.sha256((step / name).read_bytes()).hexdigest()
    assert ckpt.verify_checkpoint(step, world_size=1) is True
    assert not list((trained / "checkpoints").glob("*.tmp")) and not list(trained.rglob(".write-test-*"))


# ---------------------------------------------------------------- damaged checkpoints
def test_four_overwritten_bytes_in_model_pt_skip_to_the_previous_checkpoint(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = run / "checkpoints" / "step_4" / "model.pt"
    _flip(model)
    torch.load(model, weights_only=True)  # the damage is silent to torch: only the manifest sees it
    trainer = Trainer(_cfg(tmp_path, "logging.run_name=run"), resume="auto")
    err = capsys.readouterr().err
    assert trainer.resume_from == run / "checkpoints" / "step_2"
    assert f"skipping checkpoint {model.parent}: model.pt does not match its sha256 in manifest.json" in err
    assert "resuming from step_2 instead" in err
    result = trainer.fit()
    assert result.step == 4
    assert ckpt.verify_checkpoint(model.parent, 1), "the damaged step_4 was replaced by a good one"


@pytest.mark.parametrize("fault", ["truncated optimizer.pt", "deleted rng_rank0.pt", "deleted data_rank0.pt",
                                   "cut meta.json", "deleted manifest entry"])
def test_auto_resume_falls_back_past_a_damaged_latest_checkpoint(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, fault: str) -> None:
    step4 = run / "checkpoints" / "step_4"
    expected = {
        "truncated optimizer.pt": "optimizer.pt is truncated:",
        "deleted rng_rank0.pt": "rng_rank0.pt is missing",
        "deleted data_rank0.pt": "data_rank0.pt is missing",
        "cut meta.json": "meta.json is unreadable",
        "deleted manifest entry": "trainer.pt is not in manifest.json",
    }[fault]
    if fault == "truncated optimizer.pt":
        _truncate(step4 / "optimizer.pt")
    elif fault.startswith("deleted") and fault.endswith(".pt"):
        (step4 / fault.split()[1]).unlink()
    elif fault == "cut meta.json":
        (step4 / "meta.json").write_text('{"step": 4, "world_si')
    else:
        manifest = json.loads((step4 / "manifest.json").read_text())
        del manifest["files"]["trainer.pt"]
        (step4 / "manifest.json").write_text(json.dumps(manifest))
    code, err = _resume(tmp_path, capsys)
    assert code == 0, err
    assert f"warning: skipping checkpoint {step4}: " in err and expected in err
    assert "resuming from step_2 instead" in err
    assert "Traceback" not in err


def test_resume_path_to_a_damaged_checkpoint_is_exit_2_and_writes_nothing(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    step4 = run / "checkpoints" / "step_4"
    (step4 / "data_rank0.pt").unlink()
    before = _snapshot(run)
    code, err = _resume(tmp_path, capsys, str(step4))
    assert code == 2
    assert f"error: cannot resume from {step4}: data_rank0.pt is missing" in err
    assert "world size" not in err and "Traceback" not in err
    assert _snapshot(run) == before


def test_when_no_checkpoint_verifies_auto_resume_is_exit_2_naming_each(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _flip(run / "checkpoints" / "step_4" / "optimizer.pt")
    _truncate(run / "checkpoints" / "step_2" / "model.pt")
    before = _snapshot(run)
    code, err = _resume(tmp_path, capsys)
    assert code == 2
    assert "no checkpoint in" in err and "can be resumed" in err
    assert "step_4: optimizer.pt does not match its sha256" in err
    assert "step_2: model.pt is truncated" in err
    assert _snapshot(run) == before and "Traceback" not in err


def test_a_checkpoint_from_before_manifests_resumes_with_one_warning(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for step in ("step_2", "step_4"):
        (run / "checkpoints" / step / "manifest.json").unlink()
    trainer = Trainer(_cfg(tmp_path, "logging.run_name=run"), resume="auto")
    err = capsys.readouterr().err
    assert trainer.resume_from.name == "step_4"
    assert [line for line in err.splitlines() if "warning" in line] == [
        f"warning: checkpoint {run / 'checkpoints' / 'step_4'} has no manifest.json (written before checkpoints "
        "were verified): its files cannot be checked"]
    trainer.build()
    assert trainer.micro_step == 4
    trainer.close()


# ---------------------------------------------------------------- a resume that would change the run
def test_a_different_tokenizer_in_the_run_directory_refuses_the_resume(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tok = json.loads((run / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # another valid tokenizer: two tokens swap ids
    (run / "tokenizer.json").write_text(json.dumps(tok))
    before = _snapshot(run)
    code, err = _resume(tmp_path, capsys)
    assert code == 2
    assert f"the run's tokenizer {run / 'tokenizer.json'}" in err
    assert str(run / "checkpoints" / "step_4" / "tokenizer.json") in err and "token ids would change" in err
    assert _snapshot(run) == before and "Traceback" not in err


def test_the_same_tokenizer_written_differently_resumes(run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    tok = json.loads((run / "tokenizer.json").read_text())
    (run / "tokenizer.json").write_text(json.dumps(tok, indent=3))
    trainer = Trainer(_cfg(tmp_path, "logging.run_name=run"), resume="auto")
    assert trainer.resume_from.name == "step_4"


def test_a_missing_run_tokenizer_is_restored_from_the_checkpoint(run: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    saved = (run / "checkpoints" / "step_4" / "tokenizer.json").read_bytes()
    (run / "tokenizer.json").unlink()
    trainer = Trainer(_cfg(tmp_path, "logging.run_name=run"), resume="auto")
    trainer.build()
    trainer.close()
    assert (run / "tokenizer.json").read_bytes() == saved
    assert "was missing: restored the checkpoint's copy" in capsys.readouterr().err


def test_a_changed_architecture_is_refused_with_a_diff_before_anything_is_written(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = _snapshot(run)
    code, err = _resume(tmp_path, capsys, "auto", "model.d_model=96", "objective.schedule=linear",
                        "data.packing=false", "optimizer.lr=5e-4")
    assert code == 2
    assert "  model.d_model: checkpoint 64, now 96" in err
    assert "  objective.schedule: checkpoint loglinear, now linear" in err
    assert "  data.packing: checkpoint True, now False" in err
    assert "optimizer.lr" not in err and "kernels" not in err
    assert "size mismatch" not in err and "Traceback" not in err
    assert _snapshot(run) == before, "config.toml, metrics.jsonl and tokenizer.json untouched"


def test_settings_that_may_change_on_resume_do(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = _resume(tmp_path, capsys, "auto", "training.max_train_iteration=6", "optimizer.lr=5e-4",
                        "checkpoint.save_freq_iteration=3", "training.log_freq_iteration=2", "model.device=cpu",
                        "objective.loss_path=reference")
    assert code == 0, err
    assert json.loads((run / "checkpoints" / "step_6" / "meta.json").read_text())["step"] == 6
    assert load_config(run / "config.toml", environ={}).optimizer.lr == 5e-4


# ---------------------------------------------------------------- disks: read-only, full, size-limited
@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_checkpoints_directory_is_refused_before_training(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "runs" / "ro"
    with _tmpfs(run / "checkpoints", "ro,size=1m"):
        code = run_training(_cfg(tmp_path, "logging.run_name=ro"), None)
        err = capsys.readouterr().err
        assert code == 2
        assert f"error: cannot write to {run / 'checkpoints'}: Read-only file system" in err
        assert sorted(p.name for p in run.iterdir()) == ["checkpoints"], "nothing written before the refusal"


def test_a_disk_without_room_for_one_checkpoint_is_refused_before_the_first_step(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with _tmpfs(tmp_path / "runs", "size=1m"):
        code = run_training(_cfg(tmp_path, "logging.run_name=small"), None)
        err = capsys.readouterr().err
        assert code == 2
        assert "error: not enough disk space for a checkpoint in" in err and "MiB free" in err
        run = tmp_path / "runs" / "small"
        assert not (run / "metrics.jsonl").is_file() or "metrics.loss" not in (run / "metrics.jsonl").read_text()
        assert not any((run / "checkpoints").iterdir())


def test_a_disk_with_room_for_fewer_than_keep_last_checkpoints_warns_and_trains(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with _tmpfs(tmp_path / "runs", "size=4m"):
        code = run_training(_cfg(tmp_path, "logging.run_name=tight", "training.max_train_iteration=2"), None)
        err = capsys.readouterr().err
        assert code == 0, err
        assert "MiB free" in err and "of the 4 more checkpoints" in err and "saves may fail later" in err
        assert ckpt.verify_checkpoint(tmp_path / "runs" / "tight" / "checkpoints" / "step_2", 1)


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_a_failed_save_mid_run_is_cleaned_up_and_the_run_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 fault: str) -> None:
    # a file system of its own for checkpoints/ (one with files open for writing cannot be remounted read-only)
    with _tmpfs(tmp_path / "runs" / "mid" / "checkpoints", "size=8m") as mount:
        trainer = Trainer(_cfg(tmp_path, "logging.run_name=mid", "training.max_train_iteration=6",
                               "checkpoint.keep_last=1"))
        checkpoints = trainer.run.checkpoints
        ballast = mount / "ballast"
        real_step = trainer.step

        def step_with_fault():
            stats = real_step()
            if trainer.micro_step == 1:  # the save at step 2 meets the fault
                if fault == "disk full":
                    with open(ballast, "wb") as f:
                        f.write(b"\0" * (shutil.disk_usage(mount).free - (256 << 10)))
                else:
                    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            if trainer.micro_step == 3:  # ... which is gone before the save at step 4
                assert not (checkpoints / "step_2").exists() and not (checkpoints / "step_2.tmp").exists()
                if fault == "disk full":
                    ballast.unlink()
                else:
                    subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True)
            return stats

        trainer.step = step_with_fault
        result = trainer.fit()
        err = capsys.readouterr().err
        assert result.step == 6 and not result.interrupted
        reason = "No space left on device" if fault == "disk full" else "Read-only file system"
        assert f"warning: could not write checkpoint step_2 in {checkpoints}" in err and reason in err
        assert "its partial files were removed" in err and "Training goes on" in err
        assert sorted(p.name for p in checkpoints.iterdir()) == ["step_6"]
        assert ckpt.verify_checkpoint(checkpoints / "step_6", 1)


def _file_size_limit() -> None:  # in the child: writes past 150 kB fail with EFBIG (model.pt has 560 kB)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))


@pytest.mark.parametrize("save_every,message", [
    (2, "checkpoint saves keep failing (2 in a row), stopping at step 4"),
    (100, "the final checkpoint (step 4) could not be saved"),
], ids=["two-in-a-row", "final"])
def test_saves_that_cannot_succeed_end_the_run_with_exit_2(tmp_path: Path, save_every: int, message: str) -> None:
    sets = [*TINY, *BASE, f"logging.output_dir={tmp_path / 'runs'}", "logging.run_name=limited",
            f"checkpoint.save_freq_iteration={save_every}", "model.device=cpu"]
    done = subprocess.run([sys.executable, "-m", "cli.train", *(a for s in sets for a in ("--set", s))],
                          cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=_file_size_limit)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"error: {message}" in done.stderr and "File too large" in done.stderr
    assert "No checkpoint of this run is on disk" in done.stderr and "step_4.tmp/model.pt" in done.stderr
    assert "Traceback" not in done.stderr
    if save_every == 2:
        assert "warning: could not write checkpoint step_2" in done.stderr
    assert list((tmp_path / "runs" / "limited" / "checkpoints").iterdir()) == [], "no partial checkpoint left"


# ---------------------------------------------------------------- DDP: a failure on one rank
def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from ddp import DDPContext

    if rank == 1:  # only rank 1 cannot write: its rng_rank1.pt (20 kB) fails
        devnull = os.open(os.devnull, os.O_WRONLY)  # pytest captures output in files, which the limit would hit
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, hard))  # the soft limit only: lifted again below
    cfg = _cfg(Path(out), "logging.run_name=ddp", "model.device=cpu", "data.batch_size=4")
    ctx = DDPContext(cfg.ddp, "cpu")
    try:
        Trainer(cfg, parallel=ctx).fit()
        message = "finished"
    except TrainingError as e:
        message = str(e)
    if rank == 1:  # the run is over: what the process writes now (its result, a coverage data file) must land
        resource.setrlimit(resource.RLIMIT_FSIZE, resource.getrlimit(resource.RLIMIT_FSIZE)[1:] * 2)
    Path(out, f"rank{rank}.txt").write_text(message)
    ctx.barrier()  # both ranks are done with the process group before either tears it down
    ctx.close()


def test_under_ddp_one_rank_failing_to_write_stops_every_rank_without_a_hang(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=False,
                               start_method="spawn")
    deadline = time.monotonic() + 90
    try:
        while not procs.join(timeout=1):
            assert time.monotonic() < deadline, "the ranks hung"
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.kill()
    messages = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    for m in messages:
        assert m.startswith("checkpoint saves keep failing (2 in a row), stopping at step 4"), m
    assert "File too large" in messages[1] and "1 other rank(s) could not write their part" in messages[0]
    assert list((tmp_path / "runs" / "ddp" / "checkpoints").iterdir()) == []


# ---------------------------------------------------------------- inference reads only intact weights
def test_inference_skips_a_damaged_checkpoint_of_a_run_and_refuses_one_named_directly(
        run: Path, capsys: pytest.CaptureFixture) -> None:
    from diffusionlm.inference import load_model
    from diffusionlm.inference.loading import ModelLoadError

    shutil.rmtree(run / "final")
    step4 = run / "checkpoints" / "step_4"
    _flip(step4 / "model.pt")
    model, _, _ = load_model(run)
    assert f"warning: skipping checkpoint {step4}: model.pt does not match its sha256" in capsys.readouterr().err
    step2 = torch.load(run / "checkpoints" / "step_2" / "model.pt", weights_only=True)
    assert all(torch.equal(v, step2[k]) for k, v in model.state_dict().items())
    with pytest.raises(ModelLoadError, match=r"step_4 is damaged: model\.pt does not match its sha256"):
        load_model(step4)

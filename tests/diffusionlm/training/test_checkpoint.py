"""Checkpoint directories: atomic rename, pruning, discovery and resume resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffusionlm.training import checkpoint as ckpt


def _save(root: Path, step: int, keep: int = 2) -> Path:
    tmp = ckpt.begin_save(root, step)
    ckpt.write_rank_state(tmp, 0, {"x": step}, {"pos": step})
    for name in (*ckpt.TRAINER_FILES, "optimizer.pt"):  # what a resume needs besides the rank files
        (tmp / name).write_bytes(f"{name} {step}".encode())
    return ckpt.finish_save(tmp, step, world_size=1, keep_last=keep)


def test_save_prunes_to_keep_last_and_finds_latest(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        _save(root, step)
    assert [d.name for d in ckpt.checkpoint_dirs(root)] == ["step_20", "step_30"]
    assert ckpt.latest_checkpoint(root).name == "step_30"
    assert ckpt.load_rank_file(root / "step_30", "data", 0) == {"pos": 30}
    assert ckpt.read_meta(root / "step_30") == {"step": 30, "world_size": 1, "format": 1}


def test_an_interrupted_save_is_never_the_latest(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    _save(root, 10)
    broken = ckpt.begin_save(root, 20)  # a kill here leaves only the .tmp directory
    (broken / "model.pt").write_bytes(b"half")
    incomplete = root / "step_25"
    incomplete.mkdir()  # no meta.json: not complete
    assert ckpt.latest_checkpoint(root).name == "step_10"
    assert ckpt.resolve_resume("auto", root).name == "step_10"
    _save(root, 30)
    assert not broken.exists(), "leftover temp directories are cleaned up by the next save"


def test_resolve_resume_paths(tmp_path: Path) -> None:
    run = tmp_path / "run"
    root = run / "checkpoints"
    assert ckpt.resolve_resume(None, root) is None
    assert ckpt.resolve_resume("auto", root) is None  # fresh start
    _save(root, 5)
    assert ckpt.resolve_resume(str(run), root).name == "step_5"
    assert ckpt.resolve_resume(str(root / "step_5"), root).name == "step_5"
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.resolve_resume(str(tmp_path / "nowhere"), root)
    with pytest.raises(ckpt.CheckpointError, match="not a complete checkpoint"):
        ckpt.read_meta(tmp_path)

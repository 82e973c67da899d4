"""A real wandb run in offline mode: the run files on disk must hold our config, metrics and artifacts."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from config.schema import LoggingConfig, WandbConfig
from logger import METRICS_FILE, build_logger
from logger.wandb_logger import WANDB_ID_FILE, resolve_mode

_BLOCK, _FILE_HEADER, _RECORD_HEADER = 32768, 7, 7


def _wandb_records(path: Path) -> list:
    """Decode a `.wandb` transaction log (LevelDB log format of protobuf `Record`s)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb datastore"
    records, pending, pos = [], b"", _FILE_HEADER
    while pos + _RECORD_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _RECORD_HEADER])
        if left_in_block < _RECORD_HEADER or (kind == 0 and length == 0):
            pos += left_in_block
            continue
        chunk = data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        pos += _RECORD_HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: one protobuf record is complete
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _history(records: list) -> list[dict[str, str]]:
    rows = _by_type(records, "history")
    return [{item.key or ".".join(item.nested_key): item.value_json for item in h.item} for h in rows]


def _by_type(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)
    monkeypatch.chdir(tmp_path)


def _one_run_file(run_dir: Path, run_id: str) -> list[Path]:
    return sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))


def test_offline_run_records_config_metrics_and_checkpoint(offline, tmp_path):
    run_dir = tmp_path / "runs" / "tiny-test"
    ckpt = run_dir / "checkpoints" / "step_4"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"\0" * 64)

    log = build_logger(
        LoggingConfig(backend="wandb"), WandbConfig(tags=["ci"]), run_dir, run_name="tiny-test"
    )
    log.log_config({"model": {"size": "tiny"}, "wandb": {"api_key": "plain-text-key"}, "key": "f" * 40})
    for step in range(3):
        log.log({"metrics.loss": 4.0 / (step + 1), "metrics.lr/hidden": 0.02}, step=step)
    log.log({"metrics.loss": float("nan")}, step=3)
    log.log_artifact(ckpt, "step_4", "model")
    log.finish()

    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    (run_file,) = _one_run_file(run_dir, run_id)
    records = _wandb_records(run_file)

    (run,) = _by_type(records, "run")
    assert (run.display_name, run.project, list(run.tags)) == ("tiny-test", "diffusionlm", ["ci"])
    history = _history(records)
    assert [json.loads(h["metrics.loss"]) for h in history[:3]] == [4.0, 2.0, pytest.approx(4 / 3)]
    assert [h["_step"] for h in history] == ["0", "1", "2", "3"]
    config = {u.key: json.loads(u.value_json) for c in _by_type(records, "config") for u in c.update}
    assert config["model"] == {"size": "tiny"}
    assert config["wandb"] == {"api_key": "***"} and config["key"] == "***"
    (artifact,) = _by_type(records, "artifact")
    assert (artifact.name, artifact.type) == ("step_4", "model")
    assert [entry.path for entry in artifact.manifest.contents] == ["model.safetensors"]
    assert b"plain-text-key" not in run_file.read_bytes()
    # metrics.jsonl is written alongside, with the NaN as a string.
    lines = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1, 2, 3] and lines[3]["metrics.loss"] == "nan"


def test_resumed_run_continues_the_same_wandb_run_and_can_skip_checkpoints(offline, tmp_path):
    run_dir = tmp_path / "run"
    cfg = WandbConfig(log_checkpoints=False)
    first = build_logger(LoggingConfig(backend="wandb"), cfg, run_dir)
    first.log({"metrics.loss": 1.0}, step=0)
    first.finish()
    second = build_logger(LoggingConfig(backend="wandb"), cfg, run_dir)
    second.log({"metrics.loss": 0.5}, step=1)
    second.log_artifact(run_dir / METRICS_FILE, "ckpt", "model")  # log_checkpoints = false: skipped
    second.finish()

    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    # Two sessions within one second share the offline dir name; either way every record must carry the id.
    records = [r for f in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")) for r in _wandb_records(f)]
    assert {run.run_id for run in _by_type(records, "run")} == {run_id}
    assert len(_by_type(records, "run")) == 2
    assert sorted(h["_step"] for h in _history(records)) == ["0", "1"]
    assert not _by_type(records, "artifact")
    assert len((run_dir / METRICS_FILE).read_text().splitlines()) == 2


def test_wandb_mode_env_beats_config(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("online") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode("disabled") == "disabled"

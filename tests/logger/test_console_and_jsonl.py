"""Console and no-op backends, the metrics.jsonl sink, rank-zero silence."""

from __future__ import annotations

import io
import json
import math
import sys

import pytest

from config.schema import LoggingConfig, WandbConfig
from logger import (
    METRICS_FILE,
    ConsoleLogger,
    JsonlFileLogger,
    Logger,
    NoopLogger,
    build_logger,
)
from logger.records import clean_value, make_record, to_json_line


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_console_writes_json_lines_to_stdout_and_metrics_file(tmp_path, capsys):
    log = build_logger(LoggingConfig(backend="console"), WandbConfig(), tmp_path)
    assert isinstance(log, Logger)
    log.log({"metrics.loss": 2.718281828459045, "metrics.lr/hidden": 0.02, "data.skipped_rows": 3}, step=10)
    log.log({"metrics.loss": 1.5}, step=20)
    log.info("model has 1.2M parameters")
    log.finish()
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["step"] for r in lines] == [10, 20]
    assert lines[0]["metrics.loss"] == 2.71828  # 6 significant digits
    assert lines[0]["metrics.lr/hidden"] == 0.02
    assert lines[0]["data.skipped_rows"] == 3 and isinstance(lines[0]["data.skipped_rows"], int)
    assert lines[0]["elapsed_s"] >= 0
    assert list(lines[0])[:2] == ["step", "elapsed_s"]
    assert "parameters" in err and "parameters" not in out
    # The file holds exactly the same lines the console printed.
    assert _read_jsonl(tmp_path / METRICS_FILE) == lines


def test_non_finite_values_stay_valid_json(tmp_path):
    sink = JsonlFileLogger(tmp_path / "m.jsonl")
    stream = io.StringIO()
    log = ConsoleLogger(sink=sink, stdout=stream)
    log.log({"metrics.loss": float("nan"), "metrics.grad_l2_norm": float("inf"), "x": -math.inf}, step=1)
    log.finish()
    line = stream.getvalue().strip()
    assert "NaN" not in line and "Infinity" not in line
    record = json.loads(line)
    assert record["metrics.loss"] == "nan"
    assert record["metrics.grad_l2_norm"] == "inf"
    assert record["x"] == "-inf"


def test_clean_value_unwraps_scalars_and_rejects_junk():
    torch = pytest.importorskip("torch")
    assert clean_value(torch.tensor(0.123456789)) == 0.123457
    assert clean_value(True) == 1
    assert clean_value(123456789) == 123456789  # ints are never rounded
    with pytest.raises(TypeError, match="not a number"):
        clean_value([1, 2])
    with pytest.raises(ValueError, match="reserved"):
        make_record({"step": 1}, step=1, elapsed_s=0.0)
    with pytest.raises(ValueError):
        to_json_line({"x": float("nan")})


def test_noop_backend_prints_nothing_but_writes_metrics(tmp_path, capsys):
    log = build_logger(LoggingConfig(backend="noop"), WandbConfig(), tmp_path)
    log.log_config({"model": {"size": "tiny"}})
    log.log({"metrics.loss": 3.0}, step=5)
    log.info("hello")
    log.log_artifact(tmp_path, "ckpt", "model")
    log.finish()
    log.finish()  # idempotent
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert _read_jsonl(tmp_path / METRICS_FILE)[0]["metrics.loss"] == 3.0


def test_nonzero_rank_is_silent_and_writes_no_file(tmp_path, capsys):
    log = build_logger(LoggingConfig(backend="console"), WandbConfig(), tmp_path / "run", rank=1)
    log.log_config({"a": 1})
    log.log({"metrics.loss": 1.0}, step=1)
    log.info("should not appear")
    log.finish()
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert not (tmp_path / "run").exists()


def test_metrics_file_appends_across_runs_and_repairs_torn_line(tmp_path):
    path = tmp_path / METRICS_FILE
    first = JsonlFileLogger(path)
    first.log({"metrics.loss": 1.0}, step=1)
    first.finish()
    # A run killed in the middle of a write leaves a torn last line; the resumed run must not glue onto it.
    with path.open("a") as f:
        f.write('{"step": 2, "metr')
    second = NoopLogger(sink=JsonlFileLogger(path))
    second.log({"metrics.loss": 0.5}, step=3)
    second.finish()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["step"] == 1
    assert lines[1] == '{"step": 2, "metr'
    assert json.loads(lines[2])["step"] == 3


def test_metrics_survive_a_hard_kill(tmp_path):
    """Flushed per line: a process killed with os._exit (no cleanup) leaves every logged line on disk."""
    import subprocess

    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from logger import JsonlFileLogger\n"
        f"log = JsonlFileLogger(Path({str(tmp_path)!r}) / 'metrics.jsonl')\n"
        "for i in range(3): log.log({'metrics.loss': 1.0 / (i + 1)}, step=i)\n"
        "os._exit(9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert [r["step"] for r in _read_jsonl(tmp_path / METRICS_FILE)] == [0, 1, 2]


def test_console_log_config_goes_to_stderr_redacted(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "abcdef0123456789abcdef")
    log = build_logger(LoggingConfig(backend="console"), WandbConfig(), tmp_path)
    log.log_config({"wandb": {"api_key": "hunter2hunter2", "project": "p"}, "note": "abcdef0123456789abcdef"})
    log.info("using key abcdef0123456789abcdef now")
    log.finish()
    out, err = capsys.readouterr()
    assert out == ""
    assert "hunter2" not in err and "abcdef0123456789abcdef" not in err
    assert '"project": "p"' in err and "using key *** now" in err

"""diffusionlm-plot renders a real run's metrics.jsonl (written by the real logger sink) to a PNG."""

import struct

import pytest

from cli import plot
from logger.jsonl import JsonlFileLogger


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _write_run(run_dir, steps=12):
    sink = JsonlFileLogger(run_dir / "metrics.jsonl")
    for step in range(10, 10 * steps + 1, 10):
        sink.log({"metrics.loss": 8.0 / step ** 0.2, "metrics.lr": 1e-3, "metrics.tokens_per_s": 1000.0 + step},
                 step=step)
        if step % 40 == 0:
            sink.log({"val.nelbo": 7.0 - step / 100}, step=step)
    sink.finish()


def test_renders_all_four_curves(tmp_path, capsys):
    run = tmp_path / "runs" / "r1"
    _write_run(run)
    assert plot.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "metrics.loss" in out and "val.nelbo" in out and "metrics.lr" in out and "metrics.tokens_per_s" in out
    width, height = _png_size(run / "curves.png")
    assert width > 600 and height > 400


def test_series_skips_records_without_the_key_and_non_finite():
    records = [{"step": 1, "val.nelbo": 3.0}, {"step": 2, "metrics.loss": 1.0}, {"step": 3, "val.nelbo": None},
               {"step": 4, "val.nelbo": float("nan")}, {"step": 5, "val.nelbo": 2.5}]
    assert plot.series(records, "val.nelbo") == ([1.0, 5.0], [3.0, 2.5])


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path, capsys):
    run = tmp_path / "r2"
    _write_run(run, steps=3)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 40, "metrics.lo')  # a run killed mid-write
    out_png = tmp_path / "elsewhere" / "c.png"
    assert plot.main([str(run / "metrics.jsonl"), "--output", str(out_png)]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable line" in captured.err
    assert "val.nelbo" not in captured.out.split("curves:")[1]  # no validation in 3 steps: panel says so
    _png_size(out_png)


@pytest.mark.parametrize("content", [None, "", "\n\n", "not json\n"])
def test_missing_or_empty_metrics_is_a_clear_error(tmp_path, capsys, content):
    run = tmp_path / "r3"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    assert plot.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert ("no metrics.jsonl" in err) if content is None else ("no metric records" in err)
    assert not (run / "curves.png").exists()


def test_output_must_be_png(tmp_path, capsys):
    run = tmp_path / "r4"
    _write_run(run, steps=2)
    assert plot.main([str(run), "--output", str(tmp_path / "c.jpg")]) == 2
    assert "expected a .png" in capsys.readouterr().err


def test_several_runs_share_the_panels_one_line_each(tmp_path, capsys, monkeypatch):
    a, b = tmp_path / "mdlm", tmp_path / "ar"
    _write_run(a)
    _write_run(b, steps=6)
    lines: dict[str, int] = {}
    real_render = plot.render

    def counting_render(runs, output, title):
        lines.update({name: len(records) for name, records in runs.items()})
        return real_render(runs, output, title)

    monkeypatch.setattr(plot, "render", counting_render)
    out_png = tmp_path / "both.png"
    assert plot.main([str(a), str(b), "-o", str(out_png)]) == 0
    assert lines == {"mdlm": 15, "ar": 7}  # every record of each run, labelled by its directory
    assert _png_size(out_png)[0] > 600
    assert plot.main([str(a), str(tmp_path / "nope")]) == 2  # one bad run: a clear error, nothing written
    assert "no metrics.jsonl" in capsys.readouterr().err

"""`diffusionlm-export` as a user runs it: a bundle from a trained run, bad input exiting 2 with the setting named,
a model that breaks in fp16 exiting 1; whenever it fails, nothing at the output and nothing left beside it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cli.export import main
from diffusionlm.export import verify_bundle
from tests.diffusionlm.export.runs import beyond_fp16, final_export, trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory.mktemp("cli_export_run"))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # config errors exit from argument parsing
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _nothing_written(parent: Path, name: str) -> bool:
    return not (parent / name).exists() and not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_exports_a_run_replacing_a_non_empty_directory_with_force(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "stale.txt").write_text("from an older bundle")
    code, stdout, err = _run(capsys, "--checkpoint", str(run), "--output", str(out), "--force", "--target",
                             "generic", "--length", "32", "--batch", "1")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["bundle"] == str(out) and report["parity"]["onnxruntime"]["max_abs_diff"] < 1e-4
    assert "trtexec --onnx=denoiser.onnx --fp16" in err
    assert not (out / "stale.txt").exists() and verify_bundle(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["target"], manifest["batch"], manifest["length"]) == ("generic", 1, 32)
    assert manifest["parity"]["fp16_compute"]["gated"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"], "no temporary or replaced directory is left beside it"


@pytest.mark.parametrize(("args", "setting", "message"), [
    (["--length", "0"], "export.length", "greater than 0"),
    (["--length", "33"], "export.length", "exceeds the model's context_length (32)"),
    (["--length", "x"], "export.length", "valid integer"),
    (["--batch", "0"], "export.batch", "greater than 0"),
    (["--opset", "17"], "export.opset", "greater than or equal to 18"),
    (["--target", "phone"], "export.target", "'jetson' or 'generic'"),
    (["--set", "export.fp16_min_agreement=1.5"], "export.fp16_min_agreement", "less than or equal to 1"),
])
def test_a_bad_setting_exits_2_naming_it(run: Path, tmp_path: Path, capsys, args: list[str], setting: str,
                                         message: str) -> None:
    code, _, err = _run(capsys, "--checkpoint", str(run), "--output", str(tmp_path / "b"), *args)
    assert code == 2 and setting in err and message in err and "Traceback" not in err, err
    assert _nothing_written(tmp_path, "b")


def test_a_directory_that_is_not_a_run_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "--checkpoint", str(tmp_path / "empty"), "--output", str(tmp_path / "b"))
    assert code == 2 and "export.checkpoint" in err and "no model found" in err
    code, _, err = _run(capsys, "--checkpoint", str(tmp_path / "missing"), "--output", str(tmp_path / "b"))
    assert code == 2 and "export.checkpoint" in err and "does not exist" in err
    assert _nothing_written(tmp_path, "b")


def test_missing_checkpoint_or_output_exits_2(run: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "--output", str(tmp_path / "b"))
    assert code == 2 and "export.checkpoint" in err
    code, _, err = _run(capsys, "--checkpoint", str(run))
    assert code == 2 and "export.output" in err


def test_a_non_empty_output_is_kept_without_force(run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine.txt").write_text("keep me")
    code, _, err = _run(capsys, "--checkpoint", str(run), "--output", str(tmp_path / "b"))
    assert code == 2 and "export.output" in err and "not empty" in err and "--force" in err
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["mine.txt"]


def test_force_never_replaces_the_run_being_exported(run: Path, capsys) -> None:
    before = sorted(p.name for p in run.iterdir())
    code, _, err = _run(capsys, "--checkpoint", str(run / "final"), "--output", str(run), "--force")
    assert code == 2 and "export.output" in err and "holds the checkpoint" in err
    assert sorted(p.name for p in run.iterdir()) == before


def test_without_the_export_extra_it_exits_2_with_the_install_command(run: Path, tmp_path: Path, capsys,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an interpreter without the package imports
    code, _, err = _run(capsys, "--checkpoint", str(run), "--output", str(tmp_path / "b"))
    assert code == 2 and "onnxruntime" in err and "pip install -e '.[export]'" in err
    assert _nothing_written(tmp_path, "b")


def test_a_model_that_breaks_in_fp16_exits_1_and_writes_nothing(tmp_path: Path, capsys) -> None:
    final = final_export(tmp_path / "big", [], beyond_fp16)
    code, _, err = _run(capsys, "--checkpoint", str(final), "--output", str(tmp_path / "b"), "--length", "8")
    assert code == 1 and "parity check failed" in err and "norm.weight" in err
    assert _nothing_written(tmp_path, "b")


def test_print_config_shows_the_export_section(capsys) -> None:
    code, out, _ = _run(capsys, "--print-config", "--length", "64")
    assert code == 0 and "[export]" in out and "length = 64" in out

"""`diffusionlm-infer` in process on a tiny exported model: prompts, templates, every strategy, bad input exits 2
naming the setting, and the interactive loop (through a pseudo-terminal too)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli import infer
from config import load_config
from diffusionlm.models import build_model
from diffusionlm.tokenizer import save_tokenizer, train_tokenizer
from diffusionlm.training.export import export_final

TEXTS = ["Once upon a time there was a little cat. The end.", "The dog ran to the park and played all day.",
         "A girl found a red ball under the big tree."] * 20


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("infer")
    cfg = load_config(None, ["model.vocab_size=320", "tokenizer.vocab_size=300", "model.context_length=40",
                             "model.d_model=32", "model.n_layers=1", "model.n_heads=2"], environ={})
    save_tokenizer(train_tokenizer(TEXTS, 300), root / "tokenizer.json")
    torch.manual_seed(0)
    return export_final(build_model(cfg.model), cfg, root / "tokenizer.json", root / "final")


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    try:
        code = infer.main(list(argv))
    except SystemExit as e:  # config errors leave through config_from_args
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_prompt_is_continued_for_each_sample(export: Path, capsys) -> None:
    code, out, err = _run(capsys, "--checkpoint", str(export), "--prompt", "Once upon", "--num-samples", "3",
                          "--length", "20", "--steps", "5")
    assert code == 0, err
    assert out.count("--- sample") == 3 and out.count("Once upon") == 3
    assert "generated [" in err and "5 steps" in err


def test_a_template_keeps_its_text(export: Path, capsys) -> None:
    code, out, err = _run(capsys, "--checkpoint", str(export), "--template", "Once upon [MASK:6] The end.",
                          "--temperature", "0")
    assert code == 0, err
    assert out.startswith("Once upon") and out.rstrip().endswith("The end.")


@pytest.mark.parametrize("strategy", ["ancestral", "low_confidence", "random", "threshold"])
def test_every_strategy_and_option_runs(export: Path, capsys, strategy: str) -> None:
    code, out, err = _run(capsys, "--checkpoint", str(export), "--prompt", "The dog", "--strategy", strategy,
                          "--length", "24", "--steps", "6", "--block-length", "8", "--top-k", "20", "--top-p",
                          "0.9", "--threshold", "0.5", "--seed", "4", "--set", "inference.stop_at_eos=false")
    assert code == 0, err
    assert out.startswith("The dog")


@pytest.mark.parametrize(("flag", "value", "setting"), [
    ("--temperature", "-1", "inference.temperature"), ("--steps", "0", "inference.steps"),
    ("--top-p", "0", "inference.top_p"), ("--top-p", "1.5", "inference.top_p"), ("--top-k", "-1", "inference.top_k"),
    ("--threshold", "1", "inference.threshold"), ("--threshold", "0", "inference.threshold"),
    ("--block-length", "-2", "inference.block_length"), ("--strategy", "best", "inference.strategy"),
    ("--num-samples", "0", "inference.num_samples"), ("--length", "x", "inference.total_length"),
])
def test_a_bad_option_exits_2_naming_the_setting(export: Path, capsys, flag: str, value: str, setting: str) -> None:
    code, _, err = _run(capsys, "--checkpoint", str(export), "--prompt", "x", flag, value)
    assert code == 2 and setting in err and "Traceback" not in err


@pytest.mark.parametrize(("args", "setting", "message"), [
    (["--template", "Once [MASK:60]"], "inference.template", "more than the model's context_length (40)"),
    (["--template", "no span here"], "inference.template", "nothing to generate"),
    (["--template", "a [MASK:x] b"], "inference.template", "malformed mask marker"),
    (["--prompt", "Once upon a time there was", "--length", "4"], "inference.prompt", "leaving no room"),
    (["--prompt", "Once", "--length", "41"], "inference.total_length", "exceeds the model's context_length"),
    (["--set", "inference.template=[MASK:2]", "--set", "inference.checkpoint=/nonexistent/run"],
     "inference.checkpoint", "does not exist"),
])
def test_a_request_the_model_cannot_serve_exits_2(export: Path, capsys, args: list[str], setting: str,
                                                  message: str) -> None:
    checkpoint = [] if any("inference.checkpoint" in a for a in args) else ["--checkpoint", str(export)]
    code, _, err = _run(capsys, *checkpoint, *args)
    assert code == 2 and setting in err and message in err, err


def test_a_directory_that_is_not_a_run_exits_2(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "--checkpoint", str(tmp_path), "--prompt", "x")
    assert code == 2 and "inference.checkpoint" in err and "no model found" in err


def test_prompt_and_template_are_exclusive(export: Path, capsys) -> None:
    code, _, err = _run(capsys, "--checkpoint", str(export), "--prompt", "a", "--template", "[MASK]")
    assert code == 2 and "not allowed with" in err


def test_the_interactive_loop_reads_until_an_empty_line(export: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Once upon\n[MASK:3] The end.\n[MASK:x]\nThe dog\n\nnever read\n"))
    code, out, err = _run(capsys, "--checkpoint", str(export), "--interactive", "--length", "16", "--steps", "4")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("Once upon") and lines[1].endswith("The end.")
    assert lines[2].startswith("The dog")
    assert "malformed mask marker" in err and err.count("generated [") == 3


def test_interactive_loop_function() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()

    def respond(line: str) -> str:
        if line == "bad":
            raise ValueError("bad line")
        return line.upper()

    assert infer.interactive_loop(respond, io.StringIO("a b\nbad\n  c\n"), stdout, stderr, show_prompt=True) == 0
    assert stdout.getvalue() == "> A B\n> > C\n> "  # end of input quits
    assert stderr.getvalue() == "error: bad line\n"


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_terminal_on_stdin_starts_the_interactive_loop(export: Path) -> None:
    main_fd, tty_fd = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cli.infer", "--checkpoint", str(export), "--length", "12",
                             "--steps", "3"], stdin=tty_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(tty_fd)
    try:
        os.write(main_fd, b"Once upon\n\n")
        out, err = proc.communicate(timeout=120)  # the terminal's echo stays unread on main_fd
    finally:
        os.close(main_fd)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "empty line quits" in err and out.startswith("> Once upon") and out.rstrip().endswith(">")


def test_ctrl_c_leaves_the_interactive_loop_with_130() -> None:
    class Interrupting(io.StringIO):
        def readline(self, *args) -> str:
            raise KeyboardInterrupt

    out = io.StringIO()
    assert infer.interactive_loop(str.upper, Interrupting(), out, io.StringIO(), show_prompt=False) == 130
    assert out.getvalue() == "\n"


def test_an_autoregressive_run_is_refused_with_a_pointer_to_eval(tmp_path: Path, capsys) -> None:
    cfg = load_config(None, ["model.vocab_size=320", "tokenizer.vocab_size=300", "model.context_length=40",
                             "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.causal=true",
                             "objective.name=ar"], environ={})
    save_tokenizer(train_tokenizer(TEXTS, 300), tmp_path / "tokenizer.json")
    final = export_final(build_model(cfg.model), cfg, tmp_path / "tokenizer.json", tmp_path / "final")
    code, _, err = _run(capsys, "--checkpoint", str(final), "--prompt", "Once")
    assert code == 2 and "objective 'ar'" in err and "diffusionlm-eval" in err

import subprocess
import sys

import pytest

from cli.train_tokenizer import main
from diffusionlm.tokenizer import load_tokenizer

SMALL = ["--set", "tokenizer.vocab_size=512", "--set", "model.vocab_size=512", "--no-progress"]


def test_trains_on_builtin(tmp_path, capsys):
    out = tmp_path / "tok.json"
    assert main(["--set", "tokenizer.train_docs=200", *SMALL, "--output", str(out)]) == 0
    tok = load_tokenizer(out)
    assert tok.get_vocab_size() == 512 and tok.token_to_id("<eos>") == 2
    assert "vocab 512" in capsys.readouterr().out


def test_trains_on_shared_tinystories(tmp_path, tinystories_path):
    out = tmp_path / "tok.json"
    args = ["--set", 'data.source="files"', "--set", f'data.data_files=["{tinystories_path}"]',
            "--set", "tokenizer.train_docs=1000", *SMALL, "--output", str(out)]
    assert main(args) == 0
    tok = load_tokenizer(out)
    assert len(tok.encode(" Once upon a time").ids) < 8  # it learned the corpus' common words


def test_bad_source_exits_2_with_message(tmp_path, capsys):
    args = ["--set", 'data.source="files"', "--set", f'data.data_files=["{tmp_path}/missing.jsonl"]',
            *SMALL, "--output", str(tmp_path / "t.json")]
    assert main(args) == 2
    assert "data.data_files: file not found" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()
    with pytest.raises(SystemExit) as e:
        main(["--set", "data.batch_size=0", "--output", str(tmp_path / "t.json")])
    assert e.value.code == 2


@pytest.mark.parametrize("content", ["", "\n\n", '{"text": ""}\n{"text": "   "}\n'], ids=["empty", "blank", "no-text"])
def test_a_source_without_text_exits_2_and_writes_nothing(tmp_path, capsys, content):
    src = tmp_path / "empty.jsonl"
    src.write_text(content)
    args = ["--set", 'data.source="files"', "--set", f'data.data_files=["{src}"]', *SMALL,
            "--output", str(tmp_path / "t.json")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("no training text" in err or "no usable" in err or "empty" in err), err
    assert not (tmp_path / "t.json").exists()


def test_help_works():
    r = subprocess.run([sys.executable, "-m", "cli.train_tokenizer", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--output" in r.stdout

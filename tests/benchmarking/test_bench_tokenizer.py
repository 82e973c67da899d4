"""diffusionlm-bench-tokenizer trains and encodes real text and reports throughput as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarking.bench_tokenizer import main


def test_bench_tokenizer_reports_training_and_encoding(tinystories_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tok.json"
    rc = main(["--jsonl", str(tinystories_path), "--docs", "150", "--repeats", "1", "--set",
               "tokenizer.vocab_size=400", "--output", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    text = json.dumps(printed)
    assert "tokens_per_s" in text and "bytes_per_s" in text
    assert printed["config"]["docs"] == 150

"""benchmarking/reference_quality.py on CPU: real shards from the project's writer, a tiny model trained for a
few steps, one JSON line per eval point with a NELBO that improves, clear refusals of bad input."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from benchmarking import reference_quality
from config import load_config
from diffusionlm.data.builtin_corpus import generate_story
from diffusionlm.data.make_shards import make_shards
from diffusionlm.tokenizer import train_tokenizer

VOCAB = 512
TINY = ["--preset", "small", "--device", "cpu", "--no-compile", "--d-model", "64", "--n-layers", "2", "--n-heads",
        "2", "--context-length", "32", "--vocab-size", str(VOCAB), "--batch-size", "8"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~80k train tokens over several shards (windows must cross shard ends) and ~10k val tokens."""
    out = tmp_path_factory.mktemp("quality") / "shards"
    tok = train_tokenizer((generate_story(7, i) for i in range(300)), vocab_size=VOCAB)
    cfg = load_config(None, [f"model.vocab_size={VOCAB}", f"tokenizer.vocab_size={VOCAB}",
                             "data.builtin_num_stories=400", "data.val_every=10"])
    make_shards(cfg, tok, out, shard_tokens=20_000)
    return out


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert reference_quality.main([*TINY, *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_nelbo_falls_below_uniform_and_lines_carry_the_settings(shards: Path, capsys) -> None:
    records = _run(capsys, "--shards", str(shards), "--steps", "30", "--eval-at", "30,10", "--warmup", "5",
                   "--lr", "3e-3", "--eval-k", "2", "--eval-sequences", "16", "--label", "tiny")
    assert [r["step"] for r in records] == [10, 30]
    first, last = records
    for r in records:
        assert r["bench"] == "quality" and r["ref"] == "benchmarking/reference_quality.py" and r["config"] == "tiny"
        assert math.isfinite(r["val_nelbo_nats"]) and r["val_nelbo_nats"] > 0
        assert r["val_bits"] == pytest.approx(r["val_nelbo_nats"] / math.log(2))
        assert r["val_ppl_bound"] == pytest.approx(math.exp(r["val_nelbo_nats"]))
        assert r["tokens_seen"] == r["step"] * 8 * 32 and r["tokens_per_s"] > 0 and r["elapsed_s"] > 0
        assert r["eval_sequences"] == 16 and r["eval_tokens"] == 16 * 32
        assert math.isfinite(r["train_loss"])
        assert r["settings"] == {"lr": 3e-3, "wd": 0.1, "warmup": 5, "min_lr_ratio": 0.1, "batch_size": 8,
                                 "seed": 0, "eval_k": 2, "eval_sequences": 16, "eval_seed": 1234, "eps": 1e-3,
                                 "schedule": "loglinear", "windows": "random offsets"}
    assert last["val_nelbo_nats"] < first["val_nelbo_nats"]
    assert last["val_nelbo_nats"] < math.log(VOCAB)  # beats a uniform guess over the vocabulary
    assert last["elapsed_s"] > first["elapsed_s"]


def test_lr_warms_up_linearly_then_decays_to_the_floor() -> None:
    factors = [reference_quality.lr_factor(s, 20, 4, 0.1) for s in range(20)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and all(a >= b for a, b in itertools.pairwise(factors[4:]))
    assert reference_quality.lr_factor(20, 20, 4, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "30", "--eval-at", "10,40"], "--eval-at 40"),
    (["--vocab-size", "1024"], "vocab size 512"),
    (["--context-length", "100000"], "fewer than one window"),
])
def test_bad_input_exits_2_naming_the_problem(shards: Path, capsys, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        reference_quality.main([*TINY, "--shards", str(shards), *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_missing_shards_dir_exits_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        reference_quality.main([*TINY, "--shards", str(tmp_path / "nope")])
    assert exc.value.code == 2 and "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        reference_quality.main([*TINY, "--shards", str(tmp_path / "empty")])
    assert exc.value.code == 2 and "no meta.json" in capsys.readouterr().err

"""The shipped TinyStories recipe end to end on real text, shrunk to a CPU-sized model: both configs train
through `diffusionlm-train`, the AR run reuses the MDLM run's tokenizer, and one `diffusionlm-eval` call scores
both on the same held-out stories and reports the gap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process_env import REPRODUCIBLE_ENV

SHRINK = ["model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=512",
          "model.context_length=64", "tokenizer.vocab_size=512", "tokenizer.train_docs=400", "data.batch_size=8",
          "data.shuffle_buffer_size=32", "optimizer.warmup_iteration=2", "training.max_train_iteration=6",
          "training.val_freq_iteration=6", "training.max_val_iteration=2", "checkpoint.save_freq_iteration=6",
          "training.num_samples=0", "logging.backend=noop", "logging.progress_bar=off", "logging.output_dir=runs"]


def _sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


@pytest.mark.slow
def test_tinystories_recipe_trains_both_and_evaluates_the_gap(tmp_path: Path, tinystories_path: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "config" / "resources"
    data = f"data.data_files=[{json.dumps(str(tinystories_path))}]"
    for name, extra in (("mdlm", []), ("ar", ["tokenizer.path=runs/ts-mdlm/tokenizer.json"])):
        done = subprocess.run([sys.executable, "-m", "cli.train", "--config", str(root / f"tinystories_{name}.toml"),
                               *_sets(*SHRINK, data, f"logging.run_name=ts-{name}", *extra)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300, env=REPRODUCIBLE_ENV)
        assert done.returncode == 0, done.stderr[-3000:]
    mdlm, ar = tmp_path / "runs" / "ts-mdlm", tmp_path / "runs" / "ts-ar"
    assert (mdlm / "tokenizer.json").read_bytes() == (ar / "tokenizer.json").read_bytes()
    done = subprocess.run([sys.executable, "-m", "cli.eval", "--checkpoint", str(mdlm), "--checkpoint", str(ar),
                           *_sets("eval.max_sequences=8", "eval.k=2")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=REPRODUCIBLE_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    by_objective = {m["objective"]: m for m in report["models"]}
    assert by_objective["mdlm"]["nelbo"]["nats_per_token"] > 0 and by_objective["ar"]["nll"]["nats_per_token"] > 0
    (gap,) = report["comparison"]
    assert gap["same_tokenizer"] and gap["gap_nats_per_token"] == pytest.approx(
        by_objective["ar"]["nll"]["nats_per_token"] - by_objective["mdlm"]["nelbo"]["nats_per_token"], rel=1e-6)

"""`diffusionlm-eval` as a user runs it: an MDLM run and an AR run of the same data, compared in one command;
samples judged; bad input exits 2 naming the setting."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from cli.eval import main
from config import load_config
from diffusionlm.training import Trainer

TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.vocab_size=512", "model.context_length=32",
        "tokenizer.vocab_size=512", "tokenizer.train_docs=200", "data.batch_size=8", "data.shuffle_buffer_size=16",
        "optimizer.warmup_iteration=1", "training.max_train_iteration=3", "training.num_samples=0",
        "training.skip_validation=true", "logging.backend=noop"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_runs")
    out = {}
    for name, extra in (("mdlm", []), ("ar", ["objective.name=ar", "model.causal=true"])):
        cfg = load_config(None, [*TINY, *extra, f"logging.run_name={name}",
                                 f"logging.output_dir={json.dumps(str(root))}"], environ={})
        out[name] = Trainer(cfg).fit().run_dir
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # config errors exit from argument parsing
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


QUICK = _sets("eval.max_sequences=16", "eval.k=4")


def test_compares_an_mdlm_run_with_an_ar_run(runs: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "report.json"
    code, out, err = _run(["--checkpoint", str(runs["mdlm"]), "--checkpoint", str(runs["ar"]), *QUICK,
                           "--output", str(out_file)], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert json.loads(out_file.read_text()) == report
    assert report["schema"] == "diffusionlm-eval/1"
    assert report["data"]["source"] == "builtin" and report["data"]["split"] == "val"
    assert report["settings"]["k"] == 4 and report["settings"]["device"] == "cpu"

    mdlm, ar = report["models"]
    assert mdlm["checkpoint"] == str(runs["mdlm"].resolve()) and mdlm["objective"] == "mdlm"
    tok = mdlm["tokenizer"]
    assert tok["sha256"] == hashlib.sha256(Path(tok["path"]).read_bytes()).hexdigest()
    nelbo = mdlm["nelbo"]
    assert nelbo["sequences"] == 16 and nelbo["tokens"] == 16 * 32 == mdlm["data"]["tokens"]
    assert nelbo["bits_per_token"] == pytest.approx(nelbo["nats_per_token"] / math.log(2))
    assert nelbo["perplexity_bound"] == pytest.approx(math.exp(nelbo["nats_per_token"]))
    lo, hi = nelbo["ci95_nats"]
    assert lo < nelbo["nats_per_token"] < hi and nelbo["k"] == 4 and nelbo["stratified"]
    assert [a["rate"] for a in mdlm["masked_accuracy"]] == [0.15, 0.5, 0.85]
    assert all(0 <= a["accuracy"] <= 1 and a["tokens"] > 0 for a in mdlm["masked_accuracy"])
    assert "nll" not in mdlm and "nelbo" not in ar and "masked_accuracy" not in ar

    nll = ar["nll"]
    assert ar["objective"] == "ar" and ar["model"]["causal"] is True and nll["exact"] is True
    assert nll["tokens"] == 16 * 31, "every token of a row but its first is scored"
    assert nll["perplexity"] == pytest.approx(math.exp(nll["nats_per_token"]))
    (gap,) = report["comparison"]
    assert gap["a_metric"] == "nelbo" and gap["b_metric"] == "nll" and gap["same_tokenizer"]
    assert gap["gap_nats_per_token"] == pytest.approx(nll["nats_per_token"] - nelbo["nats_per_token"])
    assert "nelbo" in err and "nll" in err and "gap" in err and "masked accuracy" in err


def test_data_overrides_point_the_eval_at_other_text(runs: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "heldout.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Tom had {i} red apples and gave one to Sue."}) + "\n"
                            for i in range(400)))
    code, out, err = _run(["--checkpoint", str(runs["ar"]), *QUICK, "--set", "eval.max_tokens=100",
                           *_sets('data.source="files"', f"data.data_files={json.dumps([str(docs)])}")], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["data"]["source"] == "files" and report["data"]["files"] == [str(docs.resolve())]
    (ar,) = report["models"]
    assert ar["data"]["stream"]["source"] == "files"
    assert 100 <= ar["data"]["tokens"] < 100 + 32, "stops at the first row that reaches eval.max_tokens"


def test_samples_are_judged_by_the_ar_run(runs: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "samples.txt"
    samples.write_text("Once upon a time there was a cat.\nThe dog ran home. The dog ran home.\n")
    code, out, err = _run(["--samples", str(samples), "--judge", str(runs["ar"])], capsys)
    assert code == 0, err
    report = json.loads(out)
    s = report["samples"]
    assert s["count"] == 2 and s["tokens"] > 0 and report["judge"]["objective"] == "ar"
    assert 0 < s["distinct_1"] <= 1 and s["unigram_entropy_nats"] > 0
    judge = s["judge"]
    assert judge["bound"] is False and math.isfinite(judge["gen_ppl"])
    assert judge["tokens"] == s["tokens"] - 2, "each sample's first token is the AR judge's context"
    assert report["models"] == [] and "generative perplexity" in err


def test_generated_samples_are_scored(runs: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "gen.jsonl"
    code, out, err = _run(["--checkpoint", str(runs["mdlm"]), "--generate", "3", "--judge", str(runs["ar"]),
                           *QUICK, *_sets("eval.generate_length=16", "eval.generate_steps=4", 'eval.metrics=["nelbo"]',
                                          f"eval.samples_output={json.dumps(str(saved))}")], capsys)
    assert code == 0, err
    (mdlm,) = json.loads(out)["models"]
    assert "masked_accuracy" not in mdlm and "nelbo" in mdlm
    gen = mdlm["generated_samples"]
    assert gen["count"] == 3 and gen["length"] == 16 and gen["steps"] == 4 and gen["judge"] is not None
    assert len(saved.read_text().splitlines()) == 3


def test_an_ar_metric_asked_of_mdlm_and_the_reverse(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["--checkpoint", str(runs["mdlm"]), *_sets('eval.metrics=["nll"]')], capsys)
    assert code == 2 and err.startswith("error: eval.metrics: 'nll'") and "'mdlm'" in err
    code, _, err = _run(["--checkpoint", str(runs["ar"]), *_sets('eval.metrics=["masked_acc"]')], capsys)
    assert code == 2 and err.startswith("error: eval.metrics: 'masked_acc'")
    code, _, err = _run(["--checkpoint", str(runs["ar"]), "--generate", "2"], capsys)
    assert code == 2 and err.startswith("error: eval.generate")


@pytest.mark.parametrize(("args", "setting"), [
    ([], "eval.checkpoint"),
    (["--checkpoint", "{tmp}/missing"], "eval.checkpoint"),
    (["--checkpoint", "{tmp}"], "eval.checkpoint"),
    (["--checkpoint", "{mdlm}", "--set", "eval.k=0"], "eval.k"),
    (["--checkpoint", "{mdlm}", "--set", "eval.mask_rates=[0.5, 1.0]"], "eval.mask_rates"),
    (["--checkpoint", "{mdlm}", "--set", "eval.mask_rates=[0.0]"], "eval.mask_rates"),
    (["--judge", "{ar}"], "eval.judge"),
    (["--checkpoint", "{mdlm}", "--samples", "{tmp}/missing.txt"], "eval.samples"),
    (["--checkpoint", "{mdlm}", "--output", "{tmp}/no/such/dir/r.json"], "eval.output"),
    (["--checkpoint", "{mdlm}", "--set", "eval.generate=1", "--set", "eval.generate_length=999"],
     "eval.generate_length"),
    (["--checkpoint", "{mdlm}", "--set", 'data.data_files=["{tmp}/missing.jsonl"]', "--set", 'data.source="files"'],
     "data.data_files"),
], ids=["nothing", "missing", "not-a-run", "k", "rate-1", "rate-0", "judge-alone", "samples", "output", "gen-len",
        "data"])
def test_bad_input_exits_2_naming_the_setting(args: list[str], setting: str, runs: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(tmp=tmp_path, mdlm=runs["mdlm"], ar=runs["ar"]) for a in args]
    code, out, err = _run(argv, capsys)
    assert code == 2 and err.startswith("error:") and setting in err, err
    assert out == ""


def test_every_cli_refuses_the_ar_objective_on_a_bidirectional_model(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from cli.infer import main as infer_main
    from cli.train import main as train_main

    config = tmp_path / "ar.toml"
    config.write_text('[objective]\nname = "ar"\n')
    for entry in (main, train_main, infer_main):
        with pytest.raises(SystemExit) as e:
            entry(["--config", str(config)])
        assert e.value.code == 2
        assert "objective 'ar' needs model.causal = true" in capsys.readouterr().err

"""`evaluate(cfg, data_overrides) -> report`: what `diffusionlm-eval` computes, checked before any model runs.

Order of work: check the settings that need no model; load every checkpoint (and the judge) and check each
requested metric against the objective it was trained with; then score. So a typo in the last checkpoint's path
or an AR-only metric asked of an MDLM run fails in seconds, naming the setting, before minutes of scoring.

Held-out text: the first checkpoint's `[data]` with `data_overrides` (the `[data]` keys given to the eval command)
on top, for every checkpoint, so a comparison reads the same documents (each tokenized by its own run's
tokenizer into its own context length).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from config.schema import Config, DataConfig, EvalConfig
from diffusionlm.evaluation.generation import generate_texts
from diffusionlm.evaluation.heldout import LIKELIHOOD, LoadedRun, heldout_record, likelihood_scorer
from diffusionlm.evaluation.report import SCHEMA, comparisons
from diffusionlm.evaluation.sample_quality import read_samples, sample_quality

METRICS_OF = {"mdlm": ("nelbo", "masked_acc"), "ar": ("nll",)}


class EvalError(ValueError):
    """A bad eval input; the message starts with the setting it concerns (the CLI exits 2 with it)."""


def load_run(path: str, setting: str, device: torch.device, kernels: Any) -> LoadedRun:
    from diffusionlm.inference import ModelLoadError, load_model
    from diffusionlm.tokenizer import load_tokenizer

    try:
        model, run_cfg, tok_path = load_model(path, device, kernels)
    except (ModelLoadError, ValueError, OSError) as e:
        raise EvalError(f"{setting}: {path} is not a run of this project: {e}") from None
    if run_cfg.objective.name not in METRICS_OF:
        raise EvalError(f"{setting}: {path} was trained with objective {run_cfg.objective.name!r}; diffusionlm-eval "
                        f"scores {' and '.join(map(repr, METRICS_OF))} runs")
    return LoadedRun(path, model, run_cfg, load_tokenizer(tok_path), tok_path)


def plan_metrics(run: LoadedRun, requested: list[str]) -> list[str]:
    """The metrics to compute for `run`: its objective's own for "auto"; another objective's is an error."""
    own = METRICS_OF[run.objective]
    for metric in requested:
        if metric != "auto" and metric not in own:
            needs = "ar" if metric == "nll" else "mdlm"
            raise EvalError(f"eval.metrics: {metric!r} is a metric of {needs!r} checkpoints, but {run.path} was "
                            f"trained with objective {run.objective!r} (its metrics: {', '.join(own)})")
    return list(own) if "auto" in requested else list(dict.fromkeys(requested))


def _check_settings(ev: EvalConfig) -> None:
    if ev.judge and not ev.samples and not ev.generate:
        raise EvalError("eval.judge: nothing to judge: pass --samples FILE or --generate N")
    if not ev.checkpoint and not ev.samples:
        raise EvalError("eval.checkpoint: no model given: pass --checkpoint PATH (or --samples FILE --judge PATH)")
    if ev.samples and not ev.judge and not ev.checkpoint:
        raise EvalError("eval.samples: scoring samples needs a tokenizer: pass --judge CHECKPOINT")
    if ev.generate and not ev.checkpoint:
        raise EvalError("eval.generate: generating needs a checkpoint: pass --checkpoint PATH")


def _data_config(base: Config, overrides: dict[str, Any], batch_size: int | None) -> DataConfig:
    merged = {**base.data.model_dump(), **overrides}
    if batch_size is not None:
        merged["batch_size"] = batch_size
    try:
        return DataConfig.model_validate(merged)
    except ValidationError as e:
        detail = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'data'}: {x['msg']}" for x in e.errors())
        raise EvalError(f"data: the evaluated run's [data] with the given overrides is invalid: {detail}") from None


def evaluate(cfg: Config, data_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report (see report.py for its schema). Raises EvalError, DataError or TokenizerError on bad input."""
    from diffusionlm.device import resolve_precision, select_device
    from diffusionlm.ops import resolve_kernels

    ev = cfg.eval
    _check_settings(ev)
    try:
        device = select_device(ev.device)
    except ValueError as e:
        raise EvalError(f"eval.device: {e}") from None
    kernels, precision = resolve_kernels(cfg.kernels, device), resolve_precision(ev.precision, device)
    texts = read_samples(ev.samples) if ev.samples else None
    runs = [load_run(p, "eval.checkpoint", device, kernels) for p in ev.checkpoint]
    plans = [plan_metrics(run, ev.metrics) for run in runs]
    judge = load_run(ev.judge, "eval.judge", device, kernels) if ev.judge else None
    samplers = [run for run in runs if run.objective == "mdlm"]
    if ev.generate and not samplers:
        raise EvalError("eval.generate: sampling needs an MDLM checkpoint (objective 'mdlm'); the given "
                        f"checkpoints are {', '.join(run.objective for run in runs)}")
    for run in samplers if ev.generate else []:
        if (ev.generate_length or 0) > run.cfg.model.context_length:
            raise EvalError(f"eval.generate_length ({ev.generate_length}) exceeds the context_length of {run.path} "
                            f"({run.cfg.model.context_length})")
    data = _data_config(runs[0].cfg, data_overrides or {}, ev.batch_size) if runs else None

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "settings": {**ev.model_dump(mode="json"), "device": str(device), "precision": precision.name},
        "data": None if data is None else {"source": data.source, "split": ev.split, "files": _data_files(data),
                                           "config": data.model_dump(mode="json")},
        "models": [], "comparison": [], "samples": None, "judge": judge.describe() if judge else None,
    }
    saved: list[dict[str, str]] = []
    for run, metrics in zip(runs, plans):
        record = heldout_record(run, run.cfg.model_copy(update={"data": data}), ev, metrics, device, precision)
        if ev.generate and run.objective == "mdlm":
            length = ev.generate_length or run.cfg.model.context_length
            steps = ev.generate_steps or length
            with precision.autocast():
                generated = generate_texts(run.model, run.cfg.model, run.tokenizer, ev.generate, length, steps,
                                           ev.generate_strategy, ev.seed, ev.batch_size or run.cfg.data.batch_size)
            record["generated_samples"] = {**_quality(generated, judge or run, judge, ev, device, precision),
                                           "length": length, "steps": steps, "strategy": ev.generate_strategy}
            saved.extend({"checkpoint": run.path, "text": text} for text in generated)
        report["models"].append(record)
    report["comparison"] = comparisons(report["models"])
    if ev.samples_output and saved:
        Path(ev.samples_output).write_text("".join(json.dumps(row) + "\n" for row in saved), encoding="utf-8")
    if texts is not None:
        report["samples"] = {"source": str(Path(ev.samples).resolve()),
                             **_quality(texts, judge or runs[0], judge, ev, device, precision)}
    return report


def _quality(texts: list[str], tokens_of: LoadedRun, judge: LoadedRun | None, ev: EvalConfig, device: torch.device,
             precision: Any) -> dict[str, Any]:
    scorer, context, bound = None, 0, False
    if judge is not None:
        scorer = likelihood_scorer(judge, ev, torch.Generator(device=device).manual_seed(ev.seed))
        context, bound = judge.cfg.model.context_length, LIKELIHOOD[judge.objective] == "nelbo"
    with precision.autocast():
        out = sample_quality(texts, tokens_of.tokenizer, scorer, context, ev.batch_size or 16,
                             tokens_of.cfg.model.pad_token_id, device, bound)
    out["tokenizer_sha256"] = tokens_of.describe()["tokenizer"]["sha256"]
    return out


def _data_files(data: DataConfig) -> list[str] | None:
    if data.source == "files":
        return [str(Path(f).resolve()) for f in data.data_files]
    if data.source == "shards":
        return [str(Path(data.shards_dir).resolve())]
    return None

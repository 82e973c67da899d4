"""The eval report: its JSON schema, the diffusion-vs-AR comparison, and the readable table.

JSON (`SCHEMA`), top level:
  settings    the resolved [eval] section, with the device and precision used
  data        source, split, files (files / shards sources), the [data] config the rows came from
  models[]    one per checkpoint: checkpoint (absolute path), objective, model {family, causal, context_length,
              vocab_size, parameters}, tokenizer {path, sha256 (of tokenizer.json), canonical_sha256, vocab_size},
              metrics, data {sequences, tokens, split_exhausted, stream},
              nelbo (MDLM) {nats_per_token, bits_per_token, perplexity_bound, se_nats, ci95_nats, ci95_bits,
              ci95_perplexity_bound, sequences, tokens, k, eps, stratified, schedule},
              nll (AR) {the same with perplexity, ci95_perplexity, exact: true},
              masked_accuracy[] (MDLM) {rate, mode, accuracy, ce_nats, tokens},
              generated_samples (with --generate) {the samples record below, length, steps, strategy}
  comparison[] every later checkpoint against the first: a, b, a_metric, b_metric, a/b_nats_per_token,
              gap_nats_per_token (b - a), gap_bits_per_token, perplexity_ratio (b / a), gap_se_nats, same_tokenizer
  judge       the judge's model and tokenizer record, or null
  samples     (--samples) source, count, empty, tokens, unigram_entropy_nats, distinct_1..3, tokenizer_sha256,
              judge {nats_per_token, bits_per_token, gen_ppl | gen_ppl_bound, intervals, sequences, tokens, bound,
              truncated} or null
"""

from __future__ import annotations

import math
from typing import Any

SCHEMA = "diffusionlm-eval/1"


def headline(record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A model's held-out likelihood: ("nll", exact) for AR, ("nelbo", a bound) for MDLM, None if not computed."""
    for key in ("nll", "nelbo"):
        if record.get(key) is not None and record[key]["nats_per_token"] is not None:
            return key, record[key]
    return None


def comparisons(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every later model against the first. The gap's standard error treats the two estimates as independent,
    an overestimate when they read the same rows (their errors are then positively correlated)."""
    out: list[dict[str, Any]] = []
    if len(models) < 2 or headline(models[0]) is None:
        return out
    a_key, a = headline(models[0])
    for other in models[1:]:
        if headline(other) is None:
            continue
        b_key, b = headline(other)
        gap = b["nats_per_token"] - a["nats_per_token"]
        se = math.hypot(a["se_nats"], b["se_nats"]) if a["se_nats"] is not None and b["se_nats"] is not None else None
        out.append({
            "a": models[0]["checkpoint"], "b": other["checkpoint"], "a_metric": a_key, "b_metric": b_key,
            "a_nats_per_token": a["nats_per_token"], "b_nats_per_token": b["nats_per_token"],
            "gap_nats_per_token": gap, "gap_bits_per_token": gap / math.log(2.0),
            "perplexity_ratio": math.exp(gap) if gap < 700 else math.inf, "gap_se_nats": se,
            "same_tokenizer": models[0]["tokenizer"]["sha256"] == other["tokenizer"]["sha256"],
        })
    return out


def _f(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a few aligned lines for a terminal (stderr); the JSON is the record."""
    lines: list[str] = []
    if report["models"]:
        lines.append(f"{'checkpoint':<40} {'objective':<9} {'metric':<6} {'nats/tok':>9} {'bits/tok':>9} "
                     f"{'ppl':>10} {'ppl 95% CI':>21} {'seqs':>6} {'tokens':>9}")
    for m in report["models"]:
        head = headline(m)
        name = _short(m["checkpoint"])
        if head is None:
            lines.append(f"{name:<40} {m['objective']:<9}")
        else:
            key, v = head
            ppl = v.get("perplexity", v.get("perplexity_bound"))
            ci = v.get("ci95_perplexity", v.get("ci95_perplexity_bound"))
            ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
            bound = "<=" if key == "nelbo" else "  "
            lines.append(f"{name:<40} {m['objective']:<9} {key:<6} {_f(v['nats_per_token']):>9} "
                         f"{_f(v['bits_per_token']):>9} {bound}{_f(ppl, 3):>8} {ci_text:>21} {v['sequences']:>6} "
                         f"{v['tokens']:>9}")
        for acc in m.get("masked_accuracy", []):
            lines.append(f"    masked accuracy at rate {acc['rate']:.2f} ({acc['mode']}): acc {_f(acc['accuracy'])}, "
                         f"CE {_f(acc['ce_nats'])} nats over {acc['tokens']} tokens")
        if m.get("generated_samples"):
            lines.append("    generated samples: " + _samples_line(m["generated_samples"]))
        if m["data"]["split_exhausted"]:
            lines.append("    note: the split ran out before the requested rows")
    for c in report["comparison"]:
        lines.append(f"gap {_short(c['b'])} ({c['b_metric']}) - {_short(c['a'])} ({c['a_metric']}): "
                     f"{c['gap_nats_per_token']:+.4f} nats/token ({c['gap_bits_per_token']:+.4f} bits), "
                     f"perplexity ratio {c['perplexity_ratio']:.4f}"
                     + ("" if c["gap_se_nats"] is None else f", se {c['gap_se_nats']:.4f}")
                     + ("" if c["same_tokenizer"] else "  [different tokenizers: per-token figures differ in unit]"))
    if report.get("samples"):
        lines.append(f"samples ({_short(report['samples']['source'])}): " + _samples_line(report["samples"]))
    return "\n".join(lines)


def _samples_line(s: dict[str, Any]) -> str:
    text = (f"{s['count']} samples, {s['tokens']} tokens, unigram entropy {_f(s['unigram_entropy_nats'], 3)} nats, "
            f"distinct-1/2/3 {_f(s['distinct_1'], 3)}/{_f(s['distinct_2'], 3)}/{_f(s['distinct_3'], 3)}")
    judge = s.get("judge")
    if judge:
        ppl = judge.get("gen_ppl", judge.get("gen_ppl_bound"))
        text += f", generative perplexity {'<= ' if judge['bound'] else ''}{_f(ppl, 3)}"
    return text


def _short(path: str, width: int = 40) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]

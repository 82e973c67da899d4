"""Evaluation of trained runs: held-out likelihood (MDLM's NELBO bound by Monte Carlo, AR's exact NLL),
masked-token accuracy at fixed rates, and sample quality (generative perplexity, unigram entropy, distinct-n).

`evaluate(cfg, data_overrides)` is what `diffusionlm-eval` runs; the estimators are usable on their own. Every sum
over tokens or draws is float64 (stats.py says why), and per-token figures come with a 95% interval from the
spread of per-sequence estimates.
"""

from diffusionlm.evaluation.ar_nll import nll_per_sequence
from diffusionlm.evaluation.masked_accuracy import fixed_rate_mask, masked_accuracy, time_for_rate
from diffusionlm.evaluation.nelbo import nelbo_per_sequence, stratified_times
from diffusionlm.evaluation.report import SCHEMA, comparisons, format_table
from diffusionlm.evaluation.runner import EvalError, evaluate
from diffusionlm.evaluation.sample_quality import (
    SamplesError,
    distinct_n,
    read_samples,
    sample_quality,
    unigram_entropy,
)
from diffusionlm.evaluation.stats import PerSequence, RateEstimate, TokenCounts, rate_estimate

__all__ = [
    "SCHEMA", "EvalError", "PerSequence", "RateEstimate", "SamplesError", "TokenCounts", "comparisons", "distinct_n",
    "evaluate", "fixed_rate_mask", "format_table", "masked_accuracy", "nelbo_per_sequence", "nll_per_sequence",
    "rate_estimate", "read_samples", "sample_quality", "stratified_times", "time_for_rate", "unigram_entropy",
]

"""The autoregressive baseline: next-token cross-entropy on a causal model, through MDLM's trainer and data.

Why it is here: a diffusion LM's NELBO means little without an AR model of the same size, data and tokenizer
beside it. `[objective] name = "ar"` trains the transformer family with `model.causal = true` (the config
refuses a bidirectional model, `ARConfig.check_model`).

What is scored, precisely: in a row x_0 .. x_{T-1} with real-token mask r (False at `<pad>`), position j >= 1
is a *target* when r_{j-1} and r_j: the model reads positions <= j-1 and predicts x_j. Position 0 of every row
is context only, never a target (there is nothing to predict it from). A row that starts with `<bos>` therefore
scores all of its text, counted from `<bos>`; rows of this project's data carry no `<bos>` (documents are packed
back to back, each ending in `<eos>`), so each row's first token goes unscored. `real_tokens(batch)` returns
exactly these targets, so the trainer's normalizer is the number of scored tokens and the loss is the mean
next-token CE; `val.nelbo` in the training log is then the exact NLL per scored token, the same quantity as
`diffusionlm-eval`'s `nll` (which calls `next_token_ce` below).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from config.model import ModelConfig
from config.objective import ARConfig

LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def next_token_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Bool [B, T]: the positions whose token is predicted (see the module docstring); column 0 is False."""
    real = attention_mask if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    targets = torch.zeros_like(real)
    targets[:, 1:] = real[:, 1:] & real[:, :-1]
    return targets


def next_token_ce(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ce fp32 [N], logits [N, V], targets bool [B, T]): the CE of every target token, in row-major order.

    The head runs only at the N source positions (a target's left neighbour), whose logits predict the next token.
    """
    targets = next_token_targets(input_ids, attention_mask)
    sources = torch.zeros_like(targets)
    sources[:, :-1] = targets[:, 1:]
    logits = model(input_ids, attention_mask=attention_mask, output_mask=sources)  # [N, V]
    ce = F.cross_entropy(logits.float(), input_ids[targets], reduction="none")  # fp32 log-softmax
    return ce, logits, targets


@dataclass
class ARObjective:
    pad_token_id: int

    def real_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scored (target) positions: the tokens the loss is normalized by."""
        return next_token_targets(batch["input_ids"], batch.get("attention_mask"))

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                 normalizer: torch.Tensor | float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum of next-token CE over the targets / normalizer (default: this batch's target count). No randomness:
        `generator` is accepted for the objective contract and unused."""
        x = batch["input_ids"]
        ce, logits, targets = next_token_ce(model, x, batch.get("attention_mask"))
        n = targets.sum()
        if normalizer is None:
            normalizer = n.clamp_min(1)
        loss = ce.sum() / normalizer
        with torch.no_grad():
            denom = n.clamp_min(1)
            metrics = {
                "masked_ce": ce.sum() / denom,
                "masked_acc": (logits.argmax(-1) == x[targets]).sum() / denom,
                "num_masked": n,
            }
        return loss, metrics

    def training_loss(self, model: nn.Module, device: torch.device, compile: bool = False,
                      kernels: object | None = None) -> LossFn:
        """The eager reference on `model` (compiled with torch.compile when asked); no faster path is needed: every
        position is scored, so there is no masked-row selection to make static."""
        return functools.partial(self, torch.compile(model) if compile else model)


def build_ar(cfg: ARConfig, model_cfg: ModelConfig) -> ARObjective:
    """The registry's builder for the objective "ar" (the config already checked `model.causal`)."""
    ARConfig.check_model(model_cfg)
    return ARObjective(model_cfg.pad_token_id)

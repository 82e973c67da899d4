"""The generation API: iterative unmasking of a template's `<mask>` positions.

    gen = generate(model, model_cfg, template, SamplerSettings(strategy="low_confidence", steps=64), batch_size=4)
    texts = tokenizer.decode_batch(gen.rows(stop_at_eos=True), skip_special_tokens=True)

A template is a list of ids with `<mask>` wherever text is to be generated (`prompt_template`, `parse_template`);
given ids never change. The masked positions are cut into blocks (`block_length`) denoised left to right, each
with its share of the steps; each step the network predicts the block's positions (`output_index`, so the head
runs on those only), a candidate token is drawn for each (float64 Gumbel-max after temperature, top-k, top-p;
`<mask>` and `<pad>` are never drawn) and the strategy commits some of them (`SamplerSettings`).

Every random number comes from the row's own counter-based stream (seed, row, step, position), so a row's output
does not depend on the batch around it. The loop issues no host synchronisation for `low_confidence` and
`random`; `ancestral` reads one flag a step (whether anything changed, to skip the network) and `threshold` one
(whether any `<mask>` is left, to stop early).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from config.model import ModelConfig
from diffusionlm.inference.categorical import forbid
from diffusionlm.inference.result import Generation
from diffusionlm.inference.schedule import Block, plan_blocks
from diffusionlm.inference.settings import SamplerSettings
from diffusionlm.inference.strategies import (
    ancestral_reveal,
    confidence,
    draw_candidates,
    threshold_commit,
    top_k_commit,
)
from diffusionlm.inference.streams import ORDER, RowStreams

OnStep = Callable[[int, torch.Tensor], None]
StepContext = Callable[[], contextlib.AbstractContextManager]


class GenerationError(ValueError):
    """A request the model cannot serve (too long, nothing to generate); the message is meant for the user."""


class _Loop:
    """State shared by the strategies' loops: the model call, the step counter, the callbacks."""

    def __init__(self, model: nn.Module, model_cfg: ModelConfig, x: torch.Tensor, settings: SamplerSettings,
                 first_row: int, on_step: OnStep | None, step_context: StepContext | None):
        self.model, self.x, self.settings = model, x, settings
        self.mask_id = model_cfg.mask_token_id
        self.forbidden = torch.tensor(sorted({model_cfg.mask_token_id, model_cfg.pad_token_id}), device=x.device)
        self.streams = RowStreams(settings.seed, x.shape[0], x.device, first_row)
        self.on_step, self.step_context = on_step, step_context
        self.step = self.calls = 0
        self.rows = torch.arange(x.shape[0], device=x.device)[:, None] * x.shape[1]

    def logits(self, positions: torch.Tensor) -> torch.Tensor:
        """float64 logits [B, n, V] at `positions` of every row, forbidden ids at -inf. The model's time is
        each row's masked fraction (the diffusion time under the log-linear schedule)."""
        x = self.x
        t = (x == self.mask_id).float().mean(-1)
        out = self.model(x, t=t, output_index=(self.rows + positions[None]).flatten())
        self.calls += 1
        return forbid(out.view(x.shape[0], positions.numel(), -1), self.forbidden)

    def context(self) -> contextlib.AbstractContextManager:
        return self.step_context() if self.step_context is not None else contextlib.nullcontext()

    def commit(self, positions: torch.Tensor, chosen: torch.Tensor, tokens: torch.Tensor) -> None:
        self.x[:, positions] = torch.where(chosen, tokens, self.x[:, positions])
        if self.on_step is not None:
            self.on_step(self.step, self.x)
        self.step += 1


def _fixed_count(loop: _Loop, blocks: list[Block]) -> None:
    """low_confidence and random: the block's schedule says how many to commit each step."""
    s = loop.settings
    for block in blocks:
        pos = torch.tensor(block.positions, device=loop.x.device)
        for k in block.reveals:
            with loop.context():
                masked = loop.x[:, pos] == loop.mask_id
                logits = loop.logits(pos)
                tokens = draw_candidates(logits, s, loop.streams, loop.step, pos)
                if s.strategy == "low_confidence":
                    score = confidence(logits, tokens)
                else:
                    score = loop.streams.uniform(loop.step, ORDER, pos)
                loop.commit(pos, top_k_commit(masked, score, k), tokens)


def _ancestral(loop: _Loop, blocks: list[Block]) -> None:
    """MDLM's reverse process within each block; the logits are reused while no position changed (the inputs,
    and so the network's output, are then the same)."""
    s = loop.settings
    for block in blocks:
        pos = torch.tensor(block.positions, device=loop.x.device)
        logits, changed = None, None
        for j in range(block.steps):
            with loop.context():
                if logits is None or bool(changed):
                    logits = loop.logits(pos)
                masked = loop.x[:, pos] == loop.mask_id
                reveal = ancestral_reveal(masked, loop.streams, loop.step, pos, block.steps - j)
                tokens = draw_candidates(logits, s, loop.streams, loop.step, pos)
                changed = reveal.any()
                loop.commit(pos, reveal, tokens)


def _threshold(loop: _Loop, blocks: list[Block]) -> None:
    """Fast-dLLM's threshold decoding. Rows move through their blocks independently (a row starts its next block
    when its current one is full), each at no less than the pace that fills a block within its steps."""
    s, dev = loop.settings, loop.x.device
    pos = torch.tensor([p for b in blocks for p in b.positions], device=dev)
    block_of = torch.tensor([i for i, b in enumerate(blocks) for _ in b.positions], device=dev)
    budget = torch.tensor([len(b.reveals) for b in blocks], device=dev)
    nb = len(blocks)
    step_in_block = torch.zeros(loop.x.shape[0], dtype=torch.long, device=dev)
    for _ in range(pos.numel()):  # at least one commit a step: never more steps than positions
        masked = loop.x[:, pos] == loop.mask_id
        if not bool(masked.any()):
            break
        with loop.context():
            current = torch.where(masked, block_of, nb).amin(-1)  # [B]; nb once a row is done
            eligible = masked & (block_of[None] == current[:, None])
            logits = loop.logits(pos)
            tokens = draw_candidates(logits, s, loop.streams, loop.step, pos)
            left = (budget[current.clamp(max=nb - 1)] - step_in_block).clamp(min=1)
            at_least = (eligible.sum(-1) + left - 1) // left
            chosen = threshold_commit(eligible, confidence(logits, tokens), s.threshold, at_least)
            block_full = (eligible & ~chosen).sum(-1) == 0
            step_in_block = torch.where(block_full, 0, step_in_block + 1)
            loop.commit(pos, chosen, tokens)


def _as_batch(template: Sequence[int] | torch.Tensor, batch_size: int | None, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(template, dtype=torch.long).to(device)
    if x.dim() == 1:
        return x[None].expand(batch_size or 1, -1).clone()
    if x.dim() != 2 or (batch_size is not None and batch_size != x.shape[0]):
        raise GenerationError(f"template: expected ids [L] or [B, L] with B = batch_size, got {tuple(x.shape)}")
    return x.clone()


def _model_device(model: nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def generate(
    model: nn.Module,
    model_cfg: ModelConfig,
    template: Sequence[int] | torch.Tensor,
    settings: SamplerSettings | None = None,
    *,
    batch_size: int | None = None,
    first_row: int = 0,
    on_step: OnStep | None = None,
    step_context: StepContext | None = None,
) -> Generation:
    """Fill every `<mask>` of `template` (ids [L], repeated `batch_size` times, or [B, L] rows sharing one mask
    layout) with the model (a family's forward: `model(ids, t=..., output_index=...)`), on the model's device.

    Row i draws from the random stream of (settings.seed, first_row + i): a batch of rows [r, r + B) gives the
    same rows as any other batching of them (split a large request into batches with first_row).

    on_step(step, ids) runs after every step (ids is the live [B, L] buffer: clone what you keep); step_context
    wraps each step (e.g. an NVTX range). Returns a `Generation`: ids, the given positions, steps taken, model
    calls, and `rows(stop_at_eos)` to decode.
    """
    settings = settings if settings is not None else SamplerSettings()
    if batch_size is not None and batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
    x = _as_batch(template, batch_size, _model_device(model))
    mask_id, length = model_cfg.mask_token_id, x.shape[1]
    if length > model_cfg.context_length:
        raise GenerationError(f"the template has {length} positions, more than the model's context_length "
                              f"({model_cfg.context_length})")
    is_masked = x == mask_id
    layout = is_masked[0]
    if not bool((is_masked == layout).all()):
        raise GenerationError("the rows of a batch must have their <mask> positions in the same places")
    masked_positions = layout.nonzero().flatten().tolist()
    if not masked_positions:
        raise GenerationError("the template has no <mask> position: nothing to generate")
    if bool(((x < 0) | (x >= model_cfg.vocab_size)).any()):
        raise GenerationError(f"the template holds ids outside the vocabulary [0, {model_cfg.vocab_size})")
    blocks = plan_blocks(masked_positions, settings.steps, settings.block_length)
    loop = _Loop(model, model_cfg, x, settings, first_row, on_step, step_context)
    {"ancestral": _ancestral, "threshold": _threshold}.get(settings.strategy, _fixed_count)(loop, blocks)
    return Generation(ids=loop.x, given=(~layout).tolist(), eos_token_id=model_cfg.eos_token_id,
                      steps=loop.step, model_calls=loop.calls)

"""The generation API: iterative unmasking of a template's `<mask>` positions.

    gen = generate(model, model_cfg, template, SamplerSettings(strategy="low_confidence", steps=64), batch_size=4)
    texts = tokenizer.decode_batch(gen.rows(stop_at_eos=True), skip_special_tokens=True)

A template is a list of ids with `<mask>` wherever text is to be generated (`prompt_template`, `parse_template`);
given ids never change. The masked positions are cut into blocks (`block_length`) denoised left to right, each
with its share of the steps; each step the network predicts positions of the block (`output_index`, so the head
runs on those only: for the fixed-count strategies only the positions still masked), a candidate token is drawn
for each (`draw.py`: float64 Gumbel-max after temperature, top-k, top-p; `<mask>` and `<pad>` are never drawn)
and the strategy commits some of them (`SamplerSettings`).

Every random number comes from the row's own counter-based stream (seed, row, step, position), so a row's output
does not depend on the batch around it. The loop issues no host synchronisation for `low_confidence` and
`random`; `ancestral` reads one flag a step (whether anything changed, to skip the network) and `threshold` one
(whether any `<mask>` is left, to stop early). `graphed.py` replays the same loops from CUDA graphs.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from config.model import ModelConfig
from diffusionlm.inference.draw import Drawer
from diffusionlm.inference.result import Generation
from diffusionlm.inference.schedule import Block, plan_blocks
from diffusionlm.inference.settings import SamplerSettings
from diffusionlm.inference.strategies import ancestral_reveal, threshold_commit, top_k_commit
from diffusionlm.inference.streams import ORDER, RowStreams
from diffusionlm.ops.policy import PYTORCH, KernelPolicy

OnStep = Callable[[int, torch.Tensor], None]
StepContext = Callable[[], contextlib.AbstractContextManager]


class GenerationError(ValueError):
    """A request the model cannot serve (too long, nothing to generate); the message is meant for the user."""


@dataclass(frozen=True)
class Request:
    """A checked request: the rows to fill and the plan of blocks."""

    x: torch.Tensor  # int64 [B, L] on the model's device, <mask> where text is generated
    given: list[bool]  # [L]
    blocks: list[Block]


class Loop:
    """State shared by the strategies' loops: the live ids, the model call, the draws, the step counter.

    `reuse_unchanged` lets the ancestral loop skip the network while nothing changed, which costs a host read a
    step; a loop replayed from a CUDA graph turns it off (the recomputed logits are the same)."""

    def __init__(self, model: nn.Module, model_cfg: ModelConfig, x: torch.Tensor, settings: SamplerSettings,
                 blocks: list[Block], streams: RowStreams, kernels: KernelPolicy = PYTORCH,
                 on_step: OnStep | None = None, step_context: StepContext | None = None,
                 reuse_unchanged: bool = True):
        dev = x.device
        self.model, self.x, self.settings, self.blocks, self.streams = model, x, settings, blocks, streams
        self.mask_id = model_cfg.mask_token_id
        self.draw = Drawer(settings, streams, (model_cfg.mask_token_id, model_cfg.pad_token_id), kernels, dev)
        self.on_step, self.step_context, self.reuse_unchanged = on_step, step_context, reuse_unchanged
        self.step = self.calls = 0
        self.rows = torch.arange(x.shape[0], device=dev)[:, None] * x.shape[1]
        # every index tensor the loop needs, made before it starts (a CUDA graph cannot copy from the host)
        self.block_positions = [torch.tensor(b.positions, device=dev) for b in blocks]

    def logits(self, positions: torch.Tensor) -> torch.Tensor:
        """The model's logits [B, m, V] at `positions` ([m] for every row, or [B, m] per row). The model's time is
        each row's masked fraction (the diffusion time under the log-linear schedule)."""
        x = self.x
        t = (x == self.mask_id).float().mean(-1)
        out = self.model(x, t=t, output_index=(self.rows + positions).flatten())
        self.calls += 1
        return out.view(x.shape[0], -1, out.shape[-1])

    def candidates(self, logits: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, confidence) [B, m] drawn at this step from the logits at `positions`."""
        return self.draw(logits, positions, self.step)

    def context(self) -> contextlib.AbstractContextManager:
        return self.step_context() if self.step_context is not None else contextlib.nullcontext()

    def commit(self, positions: torch.Tensor, chosen: torch.Tensor, tokens: torch.Tensor) -> None:
        if positions.dim() == 1:
            self.x[:, positions] = torch.where(chosen, tokens, self.x[:, positions])
        else:
            self.x.scatter_(1, positions, torch.where(chosen, tokens, self.x.gather(1, positions)))
        if self.on_step is not None:
            self.on_step(self.step, self.x)
        self.step += 1


def run_fixed_count(loop: Loop) -> None:
    """low_confidence and random: the block's schedule says how many to commit each step. Every row of a block
    has the same number of positions still masked, so the network and the draws see just those (a static [B, m]
    selection, found without a host read)."""
    s = loop.settings
    for block, pos in zip(loop.blocks, loop.block_positions):
        left = len(block.positions)
        for k in block.reveals:
            with loop.context():
                at = pos
                if left < len(block.positions):
                    masked = (loop.x[:, pos] == loop.mask_id).to(torch.int8)
                    at = pos[masked.argsort(dim=-1, descending=True, stable=True)[:, :left]]
                tokens, conf = loop.candidates(loop.logits(at), at)
                score = conf if s.strategy == "low_confidence" else loop.streams.uniform(loop.step, ORDER, at)
                loop.commit(at, top_k_commit(score, k), tokens)
                left -= k


def run_ancestral(loop: Loop) -> None:
    """MDLM's reverse process within each block; the logits are reused while no position changed (the inputs,
    and so the network's output, are then the same)."""
    for block, pos in zip(loop.blocks, loop.block_positions):
        logits, changed = None, None
        for j in range(block.steps):
            with loop.context():
                if logits is None or not loop.reuse_unchanged or bool(changed):
                    logits = loop.logits(pos)
                masked = loop.x[:, pos] == loop.mask_id
                reveal = ancestral_reveal(masked, loop.streams, loop.step, pos, block.steps - j)
                tokens, _ = loop.candidates(logits, pos)
                changed = reveal.any()
                loop.commit(pos, reveal, tokens)


class ThresholdState:
    """Fast-dLLM's threshold decoding, a step at a time. Rows move through their blocks independently (a row
    starts its next block when its current one is full), each at no less than the pace that fills a block within
    its steps. Updated in place, so that a CUDA graph can replay a run of steps."""

    def __init__(self, loop: Loop):
        dev, blocks = loop.x.device, loop.blocks
        self.positions = torch.cat(loop.block_positions)
        self.block_of = torch.tensor([i for i, b in enumerate(blocks) for _ in b.positions], device=dev)
        self.budget = torch.tensor([len(b.reveals) for b in blocks], device=dev)
        self.step_in_block = torch.zeros(loop.x.shape[0], dtype=torch.long, device=dev)
        self.taken = torch.zeros((), dtype=torch.long, device=dev)  # steps that found a <mask> left
        self.max_steps = self.positions.numel()  # at least one commit a step

    def reset(self) -> None:
        self.step_in_block.zero_()
        self.taken.zero_()

    def masked(self, loop: Loop) -> torch.Tensor:
        return loop.x[:, self.positions] == loop.mask_id

    def step(self, loop: Loop) -> None:
        """One step; with no `<mask>` left it commits nothing."""
        nb, pos = self.budget.numel(), self.positions
        with loop.context():
            masked = self.masked(loop)
            self.taken += masked.any()
            current = torch.where(masked, self.block_of, nb).amin(-1)  # [B]; nb once a row is done
            eligible = masked & (self.block_of[None] == current[:, None])
            tokens, conf = loop.candidates(loop.logits(pos), pos)
            left = (self.budget[current.clamp(max=nb - 1)] - self.step_in_block).clamp(min=1)
            at_least = (eligible.sum(-1) + left - 1) // left
            chosen = threshold_commit(eligible, conf, loop.settings.threshold, at_least)
            block_full = (eligible & ~chosen).sum(-1) == 0
            self.step_in_block.copy_(torch.where(block_full, 0, self.step_in_block + 1))
            loop.commit(pos, chosen, tokens)


def run_threshold(loop: Loop) -> None:
    state = ThresholdState(loop)
    for _ in range(state.max_steps):
        if not bool(state.masked(loop).any()):
            break
        state.step(loop)


RUNS: dict[str, Callable[[Loop], None]] = {"ancestral": run_ancestral, "threshold": run_threshold,
                                           "low_confidence": run_fixed_count, "random": run_fixed_count}


def _as_batch(template: Sequence[int] | torch.Tensor, batch_size: int | None, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(template, dtype=torch.long).to(device)
    if x.dim() == 1:
        return x[None].expand(batch_size or 1, -1).clone()
    if x.dim() != 2 or (batch_size is not None and batch_size != x.shape[0]):
        raise GenerationError(f"template: expected ids [L] or [B, L] with B = batch_size, got {tuple(x.shape)}")
    return x.clone()


def model_device(model: nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def policy_of(model: nn.Module, kernels: KernelPolicy | None) -> KernelPolicy:
    """The kernel policy a generation runs with: the one given, else the model's (a family keeps the policy it
    was built with as `kernels`), else PyTorch everywhere."""
    return kernels if kernels is not None else getattr(model, "kernels", PYTORCH)


def prepare(model_cfg: ModelConfig, template: Sequence[int] | torch.Tensor, settings: SamplerSettings,
            batch_size: int | None, device: torch.device) -> Request:
    """Check a request against the model and plan its blocks; a request it cannot serve is a GenerationError."""
    if batch_size is not None and batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
    x = _as_batch(template, batch_size, device)
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
    return Request(x, (~layout).tolist(), plan_blocks(masked_positions, settings.steps, settings.block_length))


@torch.no_grad()
def generate(
    model: nn.Module,
    model_cfg: ModelConfig,
    template: Sequence[int] | torch.Tensor,
    settings: SamplerSettings | None = None,
    *,
    batch_size: int | None = None,
    first_row: int = 0,
    kernels: KernelPolicy | None = None,
    on_step: OnStep | None = None,
    step_context: StepContext | None = None,
) -> Generation:
    """Fill every `<mask>` of `template` (ids [L], repeated `batch_size` times, or [B, L] rows sharing one mask
    layout) with the model (a family's forward: `model(ids, t=..., output_index=...)`), on the model's device.

    Row i draws from the random stream of (settings.seed, first_row + i): a batch of rows [r, r + B) gives the
    same rows as any other batching of them (split a large request into batches with first_row). `kernels`
    decides whether the draws take the fused Triton kernel; None means the model's own policy (`model.kernels`).

    on_step(step, ids) runs after every step (ids is the live [B, L] buffer: clone what you keep); step_context
    wraps each step (e.g. an NVTX range). Returns a `Generation`: ids, the given positions, steps taken, model
    calls, and `rows(stop_at_eos)` to decode.
    """
    settings = settings if settings is not None else SamplerSettings()
    device = model_device(model)
    req = prepare(model_cfg, template, settings, batch_size, device)
    streams = RowStreams(settings.seed, req.x.shape[0], device, first_row)
    loop = Loop(model, model_cfg, req.x, settings, req.blocks, streams, policy_of(model, kernels), on_step,
                step_context)
    RUNS[settings.strategy](loop)
    return Generation(ids=loop.x, given=req.given, eos_token_id=model_cfg.eos_token_id,
                      steps=loop.step, model_calls=loop.calls)

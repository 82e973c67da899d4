"""`generate()` for repeated requests of one shape, replayed from CUDA graphs.

A small model's denoising step is a few hundred short kernels; launched one by one from Python the GPU idles
between them. Here the first request of a shape (batch, length, `<mask>` layout) runs the strategy's loop once
to warm up (compilation, allocator, library handles), then records it into CUDA graphs; every later request of
that shape copies its ids and row keys into the recorded buffers and replays. The recorded loop is `sampler.py`'s,
so the rows are the same as `generate()`'s for the same seeds, with two differences of bookkeeping: the ancestral
loop calls the network every step (reusing unchanged logits would need a host read a step; the recomputed logits
are the same), and threshold decoding, whose step count depends on the model, replays runs of `chunk_steps`
steps and reads one flag after each (steps past the last `<mask>` commit nothing).

No `on_step` or `step_context` here: a replay runs no Python between steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from config.model import ModelConfig
from diffusionlm.inference.result import Generation
from diffusionlm.inference.sampler import (
    RUNS,
    GenerationError,
    Loop,
    ThresholdState,
    model_device,
    policy_of,
    prepare,
)
from diffusionlm.inference.settings import SamplerSettings
from diffusionlm.inference.streams import RowStreams
from diffusionlm.ops.policy import KernelPolicy


@dataclass
class _Recorded:
    loop: Loop
    graphs: list[torch.cuda.CUDAGraph] = field(default_factory=list)
    masks_left: list[torch.Tensor] = field(default_factory=list)  # threshold: a flag after each chunk
    state: ThresholdState | None = None
    steps: int = 0
    calls: int = 0


class GraphedSampler:
    """Serves `generate()` requests of fixed settings from CUDA graphs (one recording per request shape)."""

    def __init__(self, model: nn.Module, model_cfg: ModelConfig, settings: SamplerSettings | None = None,
                 kernels: KernelPolicy | None = None, chunk_steps: int = 8):
        self.device = model_device(model)
        if self.device.type != "cuda":
            raise GenerationError(f"CUDA graphs need a model on a CUDA device (this one is on {self.device})")
        if chunk_steps < 1:
            raise GenerationError(f"chunk_steps must be >= 1, got {chunk_steps}")
        self.model, self.model_cfg, self.chunk_steps = model, model_cfg, chunk_steps
        self.kernels = policy_of(model, kernels)
        self.settings = settings if settings is not None else SamplerSettings()
        self._recorded: dict[tuple, _Recorded] = {}

    @torch.no_grad()
    def generate(self, template: Sequence[int] | torch.Tensor, *, batch_size: int | None = None,
                 first_row: int = 0) -> Generation:
        """As `generate(model, model_cfg, template, settings, batch_size=..., first_row=...)`."""
        req = prepare(self.model_cfg, template, self.settings, batch_size, self.device)
        key = (tuple(req.x.shape), tuple(req.given))
        rec = self._recorded.get(key)
        if rec is None:
            rec = self._recorded[key] = self._record(req.x, req.blocks)
        rec.loop.x.copy_(req.x)
        keys = RowStreams(self.settings.seed, req.x.shape[0], self.device, first_row).keys
        rec.loop.streams.keys.copy_(keys)
        steps, calls = self._replay(rec)
        return Generation(ids=rec.loop.x.clone(), given=req.given, eos_token_id=self.model_cfg.eos_token_id,
                          steps=steps, model_calls=calls)

    def _loop(self, x: torch.Tensor, blocks: list, streams: RowStreams) -> Loop:
        return Loop(self.model, self.model_cfg, x, self.settings, blocks, streams, self.kernels,
                    reuse_unchanged=False)

    def _record(self, x: torch.Tensor, blocks: list) -> _Recorded:
        run = RUNS[self.settings.strategy]
        # one stream object for the warm-up and the recording: what it caches is made outside the capture
        streams = RowStreams(self.settings.seed, x.shape[0], self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the capturing stream, as CUDA graph capture requires
            run(self._loop(x.clone(), blocks, streams))
        torch.cuda.current_stream(self.device).wait_stream(side)
        rec = _Recorded(self._loop(x.clone(), blocks, streams))
        if self.settings.strategy == "threshold":
            rec.state = ThresholdState(rec.loop)
            return rec  # its chunks are recorded when a request first reaches them
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run(rec.loop)
        rec.graphs.append(graph)
        rec.steps, rec.calls = rec.loop.step, rec.loop.calls
        return rec

    def _replay(self, rec: _Recorded) -> tuple[int, int]:
        if rec.state is None:
            rec.graphs[0].replay()
            return rec.steps, rec.calls
        state, n = rec.state, self.chunk_steps
        state.reset()
        for chunk in range((state.max_steps + n - 1) // n):
            if chunk == len(rec.graphs):
                rec.graphs.append(self._record_chunk(rec, chunk))
            rec.graphs[chunk].replay()
            if not bool(rec.masks_left[chunk]):
                break
        taken = int(state.taken)
        return taken, taken

    def _record_chunk(self, rec: _Recorded, chunk: int) -> torch.cuda.CUDAGraph:
        state, loop, n = rec.state, rec.loop, self.chunk_steps
        assert state is not None
        graph = torch.cuda.CUDAGraph()
        pool = rec.graphs[0].pool() if rec.graphs else None
        with torch.cuda.graph(graph, pool=pool):
            for i in range(chunk * n, min((chunk + 1) * n, state.max_steps)):
                loop.step = i  # the steps' random streams, fixed into the recording
                state.step(loop)
            rec.masks_left.append(state.masked(loop).any())
        return graph

"""Replaying the denoising loop from CUDA graphs gives `generate()`'s rows, for new prompts and row keys on every
replay. The recordings need a GPU; the refusal of a CPU model runs everywhere."""

from __future__ import annotations

import pytest
import torch

from diffusionlm.inference import GenerationError, GraphedSampler, SamplerSettings, generate
from diffusionlm.ops import KernelPolicy
from tests.diffusionlm.inference.toys import MASK, tiny_transformer

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def test_a_cpu_model_is_refused_with_the_reason() -> None:
    model, cfg = tiny_transformer()
    with pytest.raises(GenerationError, match="CUDA graphs need a model on a CUDA device"):
        GraphedSampler(model, cfg)


@gpu
@pytest.mark.parametrize("strategy", ["low_confidence", "random", "ancestral", "threshold"])
@pytest.mark.parametrize("triton", ["on", "off"])
def test_replays_give_the_eager_loops_rows(strategy: str, triton: str) -> None:
    model, cfg = tiny_transformer(seed=2)
    model = model.cuda().to(torch.bfloat16)
    kernels = KernelPolicy(triton=triton)
    settings = SamplerSettings(strategy=strategy, steps=7, block_length=8, temperature=0.9, threshold=0.2)
    graphed = GraphedSampler(model, cfg, settings, kernels=kernels, chunk_steps=3)
    for prompt, first_row in (([7, 8], 0), ([9, 10], 5), ([11, 12], 0)):  # a recording, then replays
        template = torch.tensor(prompt + [MASK] * 14 + [9] + [MASK] * 5)
        got = graphed.generate(template, batch_size=4, first_row=first_row)
        want = generate(model, cfg, template, settings, batch_size=4, first_row=first_row, kernels=kernels)
        assert torch.equal(got.ids.cpu(), want.ids.cpu()), (prompt, first_row)
        assert not bool((got.ids == MASK).any())
        assert got.steps == want.steps
        if strategy != "ancestral":  # the eager ancestral loop skips the network when nothing changed
            assert got.model_calls == want.model_calls


@gpu
def test_a_compiled_model_replays_too() -> None:
    model, cfg = tiny_transformer(seed=3)
    model = model.cuda().to(torch.bfloat16)
    settings = SamplerSettings(steps=16, temperature=1.0)
    compiled = torch.compile(model)
    graphed = GraphedSampler(compiled, cfg, settings, kernels=KernelPolicy(triton="on"))
    template = [MASK] * 32
    first = graphed.generate(template, batch_size=2).ids
    again = graphed.generate(template, batch_size=2).ids
    assert torch.equal(first, again)
    assert not bool((first == MASK).any())

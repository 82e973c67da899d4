"""The fused draw kernel against the PyTorch path it replaces: the same tokens from the same uniforms, the same
confidences, forbidden ids never drawn, ties to the lowest index; and whole generations identical either way."""

from __future__ import annotations

import os

import pytest
import torch

from diffusionlm.inference import SamplerSettings, generate
from diffusionlm.inference.draw import Drawer
from diffusionlm.inference.streams import RowStreams
from diffusionlm.ops import PYTORCH, KernelPolicy
from tests.diffusionlm.inference.toys import MASK, PAD, tiny_transformer

pytest.importorskip("triton", reason="Triton is not installed")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def kernels() -> KernelPolicy:
    if DEVICE.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("no GPU, and Triton's interpreter was not chosen before Triton was imported")
        return KernelPolicy(triton="interpret")
    return KernelPolicy(triton="on")


def _both(kernels: KernelPolicy, logits: torch.Tensor, settings: SamplerSettings, positions: torch.Tensor,
          step: int = 3) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    streams = RowStreams(settings.seed, logits.shape[0], DEVICE, first_row=2)
    fused = Drawer(settings, streams, (MASK, PAD), kernels, DEVICE)
    plain = Drawer(settings, streams, (MASK, PAD), PYTORCH, DEVICE)
    assert fused.fused and not plain.fused
    return fused(logits, positions, step), plain(logits, positions, step)


@pytest.mark.parametrize("vocab", [37, 2500])  # one chunk of the vocabulary, and several with a ragged end
@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.9])
def test_kernel_draws_the_pytorch_paths_tokens_and_confidences(kernels, vocab, temperature) -> None:
    torch.manual_seed(vocab)
    logits = (torch.randn(3, 5, vocab, device=DEVICE) * 3).to(torch.bfloat16)
    positions = torch.tensor([[4, 9, 11, 12, 30], [0, 1, 2, 3, 5], [7, 8, 20, 21, 22]], device=DEVICE)
    (tok, conf), (ref_tok, ref_conf) = _both(kernels, logits, SamplerSettings(temperature=temperature), positions)
    assert torch.equal(tok, ref_tok)
    assert conf.dtype == torch.float64
    torch.testing.assert_close(conf, ref_conf, rtol=1e-12, atol=0)


def test_kernel_never_draws_forbidden_ids_and_greedy_ties_go_to_the_lowest_index(kernels) -> None:
    logits = torch.zeros(2, 3, 1500, device=DEVICE)
    logits[..., MASK] = logits[..., PAD] = 50.0  # the model's favourites, never to be drawn
    logits[0, :, 1100] = logits[0, :, 1300] = 7.0  # a tie across chunks: 1100 wins
    logits[1, :, 40] = logits[1, :, 41] = 7.0
    positions = torch.arange(3, device=DEVICE)
    (tok, conf), (ref_tok, ref_conf) = _both(kernels, logits, SamplerSettings(temperature=0.0), positions)
    assert tok.tolist() == [[1100] * 3, [40] * 3] == ref_tok.tolist()
    torch.testing.assert_close(conf, ref_conf, rtol=1e-12, atol=0)
    hot = SamplerSettings(temperature=50.0)  # nearly uniform: every id has its chance, the forbidden ones none
    many = torch.zeros(4, 64, 1500, device=DEVICE)
    many[..., MASK] = many[..., PAD] = 3.0
    (tok, _), _ = _both(kernels, many, hot, torch.arange(64, device=DEVICE))
    assert not bool(((tok == MASK) | (tok == PAD)).any())
    assert tok.unique().numel() > 200


@pytest.mark.parametrize("strategy", ["low_confidence", "random", "ancestral", "threshold"])
def test_generations_are_identical_with_and_without_the_kernel(kernels, strategy) -> None:
    model, cfg = tiny_transformer(seed=4)
    model = model.to(DEVICE)
    settings = SamplerSettings(strategy=strategy, steps=6, block_length=8, temperature=0.8, threshold=0.3)
    template = [7, 8] + [MASK] * 14 + [9] + [MASK] * 5
    fused = generate(model, cfg, template, settings, batch_size=3, kernels=kernels)
    plain = generate(model, cfg, template, settings, batch_size=3)
    assert torch.equal(fused.ids, plain.ids)
    assert (fused.steps, fused.model_calls) == (plain.steps, plain.model_calls)

"""The compiled diffusionlm::draw (csrc/draw_cpu.cpp, built here from the sources) against its PyTorch fallback,
the inference path's own arithmetic and the counter-based streams, and as a sampler (chi-square)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusionlm.inference.categorical import forbid, sample_tokens
from diffusionlm.inference.streams import TOKENS, RowStreams
from diffusionlm.ops import csrc


@pytest.fixture
def poisoned_empty():
    """Uninitialised outputs filled with NaN / the largest int64 (torch's deterministic mode), so an element the
    kernel never writes cannot pass for a result."""
    was = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(was)
    torch.utils.deterministic.fill_uninitialized_memory = fill


def _keys(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**32, (n,), generator=g), torch.randint(0, 2**32, (n,), generator=g)


def _draw(logits, key0, key1, temperature, forbid_a, forbid_b):
    return torch.ops.diffusionlm.draw(logits, key0, key1, temperature, forbid_a, forbid_b)


@pytest.mark.parametrize("rows,vocab", [(1, 37), (3, 5000), (2, 1)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.9])
def test_matches_reference(compiled, poisoned_empty, rows, vocab, dtype, temperature):
    g = torch.Generator().manual_seed(rows * vocab)
    logits = (torch.randn(rows, vocab, generator=g) * 4).to(dtype)
    key0, key1 = _keys(rows, vocab)
    forbidden = (int(logits[0].float().argmax()), vocab + 3)  # the first row's best, and an id outside V
    if vocab == 1:
        forbidden = (-1, 5)  # a one-entry vocabulary with nothing forbidden: always token 0, confidence 1
    tokens, confidence = _draw(logits, key0, key1, temperature, *forbidden)
    ref_tokens, ref_confidence = csrc.draw_reference(logits, key0, key1, temperature, *forbidden)
    assert tokens.dtype == torch.int64 and confidence.dtype == torch.float64
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(confidence, ref_confidence, rtol=1e-12, atol=0)
    assert forbidden[0] not in tokens.tolist() or vocab == 1


def test_matches_the_inference_path(compiled):
    """The tokens of categorical.py's forbid + sample_tokens with streams.py's uniforms, on [B, n, V] logits."""
    streams = RowStreams(seed=7, batch_size=3)
    keys = streams.bases(step=4, stream=TOKENS, positions=torch.arange(6))
    logits = torch.randn(3, 6, 1000, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16) * 3
    for temperature in (0.0, 0.8):
        uniforms = streams.from_bases(keys, 1000) if temperature > 0 else None
        full = forbid(logits, [999, 5])
        expected = sample_tokens(full, temperature, 0, 1.0, uniforms)
        tokens, confidence = csrc.draw(logits, keys[0], keys[1], temperature, 999, 5)
        assert torch.equal(tokens, expected)
        torch.testing.assert_close(confidence, full.softmax(-1).gather(-1, expected[..., None])[..., 0],
                                   rtol=1e-12, atol=0)


def test_uniforms_are_the_streams(compiled):
    """Bit for bit: streams.py's RowStreams.from_bases, the compiled op and the fallback's re-implementation."""
    streams = RowStreams(seed=2024, batch_size=4)
    keys = streams.bases(step=3, stream=TOKENS, positions=torch.arange(9))
    expected = streams.from_bases(keys, 257)  # [4, 9, 257]
    got = torch.ops.diffusionlm.uniforms(keys[0].reshape(-1), keys[1].reshape(-1), 257).view(4, 9, 257)
    assert torch.equal(got, expected)
    assert torch.equal(csrc.uniforms_reference(keys[0], keys[1], 257), expected)
    # keys at the edges of [0, 2^32)
    edge = torch.tensor([0, 1, 2**31, 2**32 - 1])
    from_streams = RowStreams(seed=0, batch_size=1).from_bases([edge, edge.flip(0)], 64)
    assert torch.equal(torch.ops.diffusionlm.uniforms(edge, edge.flip(0), 64), from_streams)


def test_greedy_ties_go_to_the_lowest_index(compiled, poisoned_empty):
    logits = torch.zeros(3, 5000)
    logits[0, [4000, 17, 4500]] = 2.0
    logits[1, [4999, 3000]] = 1.0
    logits[2, [10, 20]] = 5.0  # 10 is forbidden: the tie goes to 20
    tokens, _ = _draw(logits, *_keys(3, 0), 0.0, 10, -1)
    assert tokens.tolist() == [17, 3000, 20]
    tokens, _ = _draw(torch.zeros(2, 37, dtype=torch.float16), *_keys(2, 0), 0.0, 0, 1)
    assert tokens.tolist() == [2, 2]


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.9])
def test_forbidden_ids_are_never_drawn(compiled, temperature):
    logits = torch.randn(512, 40, generator=torch.Generator().manual_seed(3))
    logits[:, 7] = 50.0  # by far the largest logits
    logits[:, 31] = 45.0
    tokens, confidence = _draw(logits, *_keys(512, 9), temperature, 7, 31)
    assert not torch.isin(tokens, torch.tensor([7, 31])).any()
    # with the two giants out, the rest keep all the probability
    masked = logits.double().index_fill(-1, torch.tensor([7, 31]), float("-inf"))
    assert torch.allclose(confidence, masked.softmax(-1).gather(-1, tokens[:, None])[:, 0], rtol=1e-12, atol=0)


def test_confidence_is_the_float64_softmax(compiled):
    """softmax(logits)[token], computed independently in numpy float64 (untempered, forbidden ids excluded)."""
    logits = torch.randn(16, 301, generator=torch.Generator().manual_seed(5)) * 6
    tokens, confidence = _draw(logits, *_keys(16, 5), 1.3, 0, 300)
    x = logits.double().numpy().copy()
    x[:, [0, 300]] = -np.inf
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = p[np.arange(16), tokens.numpy()]
    np.testing.assert_allclose(confidence.numpy(), expected, rtol=1e-12, atol=0)


def test_draws_follow_softmax_of_logits_over_temperature(compiled):
    """Chi-square goodness of fit: 20000 draws (one row each, different keys) of V = 8 against softmax(l / T)."""
    logits = torch.tensor([0.3, -1.0, 1.2, 0.0, -0.4, 0.8, -1.5, 0.5])
    temperature, n = 0.7, 20000
    tokens, _ = _draw(logits.expand(n, 8).contiguous(), *_keys(n, 11), temperature, -1, -1)
    counts = torch.bincount(tokens, minlength=8).double()
    expected = n * torch.softmax(logits.double() / temperature, -1)
    assert expected.min() > 50  # the statistic's chi-square approximation holds
    statistic = float(((counts - expected) ** 2 / expected).sum())
    # the 0.999 quantile of chi-square with 7 degrees of freedom: p-value > 1e-3
    assert statistic < 24.322, (statistic, counts.tolist(), expected.tolist())


def test_wrapper_shapes_and_fallback_agree(compiled):
    """csrc.draw on [B, n, V] logits with [B, 1] keys broadcast over positions, as the sampler's keys are."""
    logits = torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(8))
    key0, key1 = (k[:, None] for k in _keys(2, 8))
    tokens, confidence = csrc.draw(logits, key0, key1, 0.9, 4, 5)
    ref_tokens, ref_confidence = csrc.draw_reference(logits, key0, key1, 0.9, 4, 5)
    assert tokens.shape == (2, 3) and torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(confidence, ref_confidence, rtol=1e-12, atol=0)


def test_bad_arguments_are_refused(compiled):
    with pytest.raises(RuntimeError, match="temperature"):
        _draw(torch.zeros(1, 4), *_keys(1, 0), -1.0, 0, 1)
    with pytest.raises(RuntimeError, match="keys must be"):
        _draw(torch.zeros(2, 4), *_keys(1, 0), 1.0, 0, 1)
    with pytest.raises(RuntimeError, match="logits must be"):
        _draw(torch.zeros(2, 4, dtype=torch.int32), *_keys(2, 0), 1.0, 0, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_matches_reference(compiled, dtype):
    """The CUDA kernel (built where a GPU and a toolkit are) draws the fallback's tokens, and replays from a
    CUDA graph."""
    if "cuda" not in csrc._ensure_state().devices:
        pytest.skip("the library was built without its CUDA kernels")
    g = torch.Generator().manual_seed(12)
    logits = (torch.randn(64, 50257, generator=g) * 3).to(dtype)
    key0, key1 = _keys(64, 12)
    for temperature in (0.0, 0.7, 1.9):
        expected = csrc.draw_reference(logits, key0, key1, temperature, 5, 50000)
        got = _draw(logits.cuda(), key0.cuda(), key1.cuda(), temperature, 5, 50000)
        assert torch.equal(got[0].cpu(), expected[0])
        torch.testing.assert_close(got[1].cpu(), expected[1], rtol=1e-12, atol=0)
    static = logits.cuda(), key0.cuda(), key1.cuda()
    _draw(*static, 0.7, 5, 50000)  # warm up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _draw(*static, 0.7, 5, 50000)
    new_key0, _ = _keys(64, 13)
    static[1].copy_(new_key0)  # new keys, same buffers
    graph.replay()
    expected = csrc.draw_reference(logits, new_key0, key1, 0.7, 5, 50000)
    assert torch.equal(captured[0].cpu(), expected[0])


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize("strategy", ["low_confidence", "threshold"])
def test_generations_with_the_compiled_draw_are_the_pytorch_paths(strategy: str) -> None:
    """The sampler takes diffusionlm::draw where the kernel policy has the compiled ops and Triton does not run
    (the edge target), and produces the rows of the PyTorch path."""
    from config.kernels import KernelsConfig
    from diffusionlm.inference import SamplerSettings, generate
    from diffusionlm.ops import PYTORCH, resolve_kernels
    from tests.diffusionlm.inference.toys import MASK, tiny_transformer

    policy = resolve_kernels(KernelsConfig(triton="off", csrc="auto"), "cpu")
    assert policy.csrc == "on" and policy.record()["csrc"] == "on"
    assert resolve_kernels(KernelsConfig(triton="off", csrc="off"), "cpu").csrc == "off"
    model, cfg = tiny_transformer(seed=6)
    settings = SamplerSettings(strategy=strategy, steps=6, block_length=8, temperature=0.9, threshold=0.3)
    template = [7, 8] + [MASK] * 14
    compiled = generate(model, cfg, template, settings, batch_size=3, kernels=policy)
    plain = generate(model, cfg, template, settings, batch_size=3, kernels=PYTORCH)
    assert torch.equal(compiled.ids, plain.ids)

"""The masked-rows loss computes exactly the reference objective's function (run eagerly here: CPU CI has
no GPU), through the PyTorch ops or through the Triton kernels in Triton's interpreter."""

import os

import pytest
import torch

from config.schema import Config
from diffusionlm.diffusion import CompiledMaskedLoss, MDLMObjective
from diffusionlm.models import DiffusionTransformer
from diffusionlm.ops import PYTORCH, KernelPolicy


def _setup(schedule: str = "loglinear", masked_only: bool = True, antithetic: bool = True,
           kernels: KernelPolicy = PYTORCH):
    cfg = Config()
    cfg.model.vocab_size, cfg.model.n_layers, cfg.model.context_length = 300, 2, 32
    cfg.objective.schedule, cfg.objective.masked_only_logits = schedule, masked_only
    cfg.objective.antithetic = antithetic
    torch.manual_seed(0)
    model = DiffusionTransformer(cfg.model, kernels)
    objective = MDLMObjective.from_config(cfg.objective, cfg.model)
    return model, objective


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.fixture(params=["pytorch", "triton"])
def kernels(request):
    """The loss's own path (cross-entropy statistics, SwiGLU) through PyTorch or through the Triton kernels
    (run by Triton's interpreter on the CPU: see diffusionlm/ops)."""
    policy = PYTORCH
    if request.param == "triton":
        pytest.importorskip("triton", reason="Triton is not installed")
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("Triton's interpreter was not chosen before Triton was imported")
        policy = KernelPolicy(triton="interpret", mlp="triton")
    return policy


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
@pytest.mark.parametrize("padded", [False, True])
def test_same_loss_metrics_and_gradients_as_objective(schedule, padded, kernels):
    model, objective = _setup(schedule, kernels=kernels)
    fast = CompiledMaskedLoss(objective, model, compile=False, kernels=kernels)
    x0 = torch.randint(5, 300, (4, 32))
    batch = {"input_ids": x0}
    if padded:  # rows of different lengths: padding is never masked and never attended to
        lengths = torch.tensor([32, 20, 9, 27])
        batch["attention_mask"] = torch.arange(32)[None, :] < lengths[:, None]
        batch["input_ids"] = torch.where(batch["attention_mask"], x0, 0)
    for seed in range(3):
        normalizer = torch.tensor(100.0 + seed)
        loss_a, m_a = objective(model, batch, torch.Generator().manual_seed(seed), normalizer)
        grads_a = _grads(model, loss_a)
        loss_b, m_b = fast(batch, torch.Generator().manual_seed(seed), normalizer)
        grads_b = _grads(model, loss_b)
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
        for key in ("masked_ce", "masked_acc", "mask_fraction", "num_masked"):
            torch.testing.assert_close(m_b[key].float(), m_a[key].float(), rtol=1e-6, atol=1e-6)
        for ga, gb in zip(grads_a, grads_b):
            torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)  # fp32 rounding of another formula
    assert m_a["num_masked"] > 0


def test_default_normalizer_is_real_tokens_like_objective():
    model, objective = _setup()
    fast = CompiledMaskedLoss(objective, model, compile=False)
    batch = {"input_ids": torch.randint(5, 300, (2, 32))}
    loss_a, _ = objective(model, batch, torch.Generator().manual_seed(1))
    loss_b, _ = fast(batch, torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)


def test_rejects_full_vocabulary_objective():
    model, objective = _setup(masked_only=False)
    with pytest.raises(ValueError, match="masked_only_logits"):
        CompiledMaskedLoss(objective, model, compile=False)


def test_static_capacity_path_matches_reference_and_bounds_the_count():
    model, objective = _setup()
    static = CompiledMaskedLoss(objective, model, compile=False)
    assert static.static_shapes
    batch = {"input_ids": torch.randint(5, 300, (8, 32))}
    cap = static.capacity(8, 32)
    assert 0.5 * 8 * 32 < cap < 8 * 32  # tighter than every position, above the mean
    for seed in range(4):
        loss_a, m_a = objective(model, batch, torch.Generator().manual_seed(seed), 200.0)
        loss_b, m_b = static(batch, torch.Generator().manual_seed(seed), 200.0)
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
        for key in ("masked_ce", "masked_acc", "num_masked"):
            torch.testing.assert_close(m_b[key].float(), m_a[key].float(), rtol=1e-6, atol=1e-6)
        assert int(m_b["num_masked"]) <= cap and int(m_b["num_dropped"]) == 0


def test_overflow_beyond_capacity_is_reported_not_hidden():
    model, objective = _setup()
    static = CompiledMaskedLoss(objective, model, compile=False)
    static._capacity[(8, 32)] = 3  # force a capacity far below the masked count
    _, m = static({"input_ids": torch.randint(5, 300, (8, 32))}, torch.Generator().manual_seed(0), 200.0)
    assert int(m["num_dropped"]) == int(m["num_masked"]) - 3 > 0


def test_without_antithetic_times_the_exact_selection_matches_reference():
    model, objective = _setup(antithetic=False)
    exact = CompiledMaskedLoss(objective, model, compile=False)
    assert exact.static_shapes is False
    batch = {"input_ids": torch.randint(5, 300, (8, 32))}
    for seed in range(3):
        loss_a, m_a = objective(model, batch, torch.Generator().manual_seed(seed), 200.0)
        loss_b, m_b = exact(batch, torch.Generator().manual_seed(seed), 200.0)
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
        assert int(m_b["num_masked"]) == int(m_a["num_masked"]) and int(m_b["num_dropped"]) == 0


@pytest.mark.parametrize(("path", "device", "masked_rows"), [
    ("auto", "cpu", False), ("auto", "cuda", True), ("masked_rows", "cpu", True), ("reference", "cuda", False)])
def test_the_objective_decides_which_path_trains(path, device, masked_rows):
    model, objective = _setup()
    objective.loss_path = path
    assert objective.uses_masked_rows(torch.device(device)) is masked_rows
    loss = objective.training_loss(model, torch.device("cpu") if device == "cpu" else torch.device(device))
    assert isinstance(loss, CompiledMaskedLoss) is masked_rows


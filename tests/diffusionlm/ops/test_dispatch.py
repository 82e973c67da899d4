"""Which tensors take the Triton path under each policy."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from diffusionlm.ops import PYTORCH, KernelPolicy


def _tensors() -> dict[str, torch.Tensor]:
    """A CPU tensor and a CUDA one (a fake one, without a GPU: `uses_triton` reads only its device)."""
    with FakeTensorMode():
        fake_cuda = torch.zeros(2, device="cuda")
    return {"cpu": torch.zeros(2), "cuda": torch.zeros(2, device="cuda") if torch.cuda.is_available() else fake_cuda}


@pytest.mark.parametrize(("mode", "expected"), [
    ("off", {"cpu": False, "cuda": False}),
    ("on", {"cpu": False, "cuda": True}),  # CPU tensors take the PyTorch path
    ("interpret", {"cpu": True, "cuda": True}),  # every tensor, through Triton's interpreter
])
def test_uses_triton_per_mode_and_device(mode, expected):
    policy = KernelPolicy(triton=mode)
    assert {device: policy.uses_triton(t) for device, t in _tensors().items()} == expected


def test_the_default_policy_is_pytorch_everywhere():
    """A model built without a policy runs every op's PyTorch path, on any device."""
    assert KernelPolicy(triton="off", attention="sdpa", mlp="pytorch") == PYTORCH
    assert not any(PYTORCH.uses_triton(t) for t in _tensors().values())


def test_policy_is_frozen():
    """The model keeps one policy for the run; torch.compile reads it as a constant."""
    with pytest.raises(AttributeError):
        PYTORCH.triton = "on"  # type: ignore[misc]


def test_package_label_names_the_installed_version():
    from importlib.metadata import version

    from diffusionlm.ops.dispatch import package_label

    assert package_label("torch") == f"torch {version('torch')}"
    assert package_label("no-such-distribution-here") == "no-such-distribution-here"

"""Which tensors take the Triton path, and how it is turned off."""

from __future__ import annotations

import pytest
import torch

import diffusionlm.ops as ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_kernels_are_used_and_can_be_turned_off(monkeypatch):
    t = torch.zeros(2, device=DEVICE)
    assert ops.triton_enabled(t)
    monkeypatch.setenv("DIFFUSIONLM_TRITON", "0")
    assert not ops.triton_enabled(t)
    monkeypatch.setenv("DIFFUSIONLM_TRITON", "auto")
    assert ops.triton_enabled(t) == (DEVICE == "cuda"), "CPU tensors take the PyTorch path by default"
    monkeypatch.setenv("DIFFUSIONLM_TRITON", "off")
    with pytest.raises(ValueError, match=r"DIFFUSIONLM_TRITON='off'.*auto, 1, 0, interpret"):
        ops.triton_enabled(t)


def test_package_label_names_the_installed_version():
    from importlib.metadata import version

    from diffusionlm.ops.dispatch import package_label

    assert package_label("torch") == f"torch {version('torch')}"
    assert package_label("no-such-distribution-here") == "no-such-distribution-here"

"""The kernel tests run the Triton kernels: on a GPU when there is one, otherwise on the CPU through
Triton's interpreter (the same kernel code, run element by element)."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    if DEVICE == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("no GPU, and Triton's interpreter was not chosen before Triton was imported")
        monkeypatch.setenv("DIFFUSIONLM_TRITON", "interpret")
    else:
        monkeypatch.delenv("DIFFUSIONLM_TRITON", raising=False)

"""The kernel tests run the Triton kernels: on a GPU when there is one, otherwise on the CPU through
Triton's interpreter (the same kernel code, run element by element). Tests of a kernel take the `kernels`
fixture, the policy that sends their tensors to it, and pass it to the ops."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from diffusionlm.ops import KernelPolicy

pytest.importorskip("triton", reason="Triton is not installed")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def kernels() -> KernelPolicy:
    """The policy under test: Triton kernels for this device's tensors, the Triton MLP (quack's has its own
    tests)."""
    if DEVICE == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("no GPU, and Triton's interpreter was not chosen before Triton was imported")
        return KernelPolicy(triton="interpret", mlp="triton")
    return KernelPolicy(triton="on", mlp="triton")


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The compiled csrc/ ops, built into a fresh directory as kernels.csrc = 'jit' would (once a process: later
    tests find them loaded)."""
    from torch.utils.cpp_extension import is_ninja_available

    from diffusionlm.ops import csrc

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        pytest.skip(f"no C++ compiler ({compiler!r} is not on PATH)")
    if not is_ninja_available():
        pytest.skip("ninja is not installed")
    if not csrc.load(jit=True, build_dir=tmp_path_factory.mktemp("csrc-build")):
        pytest.fail(f"the kernels did not build: {csrc.status()}")

"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Without a GPU, Triton kernels can still run on the CPU through Triton's interpreter, which must be chosen
# before Triton is first imported. Only the kernel tests use it (DIFFUSIONLM_TRITON=interpret); everything
# else takes the PyTorch path on the CPU either way.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DIFFUSIONLM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
TINYSTORIES = SHARED_DATA / "tinystories" / "train.jsonl"


@pytest.fixture(scope="session")
def tinystories_path() -> Path:
    """The real TinyStories sample from ../shared/data (never copied into the repo)."""
    if not TINYSTORIES.is_file():
        pytest.skip(f"shared data not found at {TINYSTORIES}")
    return TINYSTORIES


@pytest.fixture(scope="session")
def shared_text_dir() -> Path:
    d = SHARED_DATA / "text"
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d}")
    return d


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)

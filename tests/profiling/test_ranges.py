"""NVTX switches: levels nest, and everything is free when off (the environment's override is a config
matter: tests/config)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from config.schema import ProfilingConfig
from profiling import NULL_RANGE, Profiler
from profiling.ranges import NvtxRange


def test_off_returns_the_shared_null_context_for_every_level(tmp_path):
    prof = Profiler(ProfilingConfig(), tmp_path)
    assert not prof.enabled and not prof.nvtx_enabled
    for level in ("coarse", "fine", "verbose"):
        assert prof.range("train_step", level) is NULL_RANGE
    assert prof.instrument_module(__import__("torch").nn.Linear(2, 2)) == []


class _UnformattableName(str):
    """A range name that explodes if anything formats or copies it."""

    def __format__(self, spec: str) -> str:
        raise AssertionError("range name was formatted while profiling is off")

    def __str__(self) -> str:
        raise AssertionError("range name was converted while profiling is off")


def test_off_formats_nothing_and_hands_out_one_shared_object(tmp_path):
    prof = Profiler(ProfilingConfig(), tmp_path)
    coarse_only = Profiler(ProfilingConfig(nvtx=True, nvtx_level="coarse"), tmp_path)
    name = _UnformattableName("block")
    for _ in range(3):
        with prof.range(name) as a, coarse_only.range(name, "fine") as b, prof.range(name, "verbose") as c:
            assert a is b is c is None  # nullcontext yields None: nothing was built for the call
    assert prof.range(name) is NULL_RANGE and coarse_only.range(name, "fine") is NULL_RANGE
    assert coarse_only._ranges == {}  # no per-name objects cached for disabled levels


def test_levels_nest_and_ranges_are_built_once(tmp_path):
    prof = Profiler(ProfilingConfig(nvtx=True, nvtx_level="fine"), tmp_path)
    assert prof.enabled and prof.level == "fine"
    coarse = prof.range("train_step")
    assert isinstance(coarse, NvtxRange) and coarse.name == "train_step"
    assert prof.range("train_step") is coarse  # cached: no per-step construction
    assert isinstance(prof.range("loss", "fine"), NvtxRange)
    assert prof.range("aten", "verbose") is NULL_RANGE
    with coarse, prof.range("forward"), prof.range("loss", "fine"), coarse:  # re-entrant push/pop
        pass
    with pytest.raises(KeyError):
        prof.range("x", "loud")


def test_verbose_without_cuda_warns_instead_of_failing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    with pytest.warns(UserWarning, match="autograd ranges unavailable"):
        prof = Profiler(ProfilingConfig(nvtx=True, nvtx_level="verbose"), tmp_path)
    assert isinstance(prof.range("x", "verbose"), NvtxRange)
    prof.close()


def test_importing_logger_and_profiling_stays_light():
    code = (
        "import sys, logger, profiling\n"
        "heavy = [m for m in ('wandb', 'nvtx', 'rich', 'torch') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""

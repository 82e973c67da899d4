"""Ranks of a real gloo job share one run dir: each writes its own trace file."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from config.schema import ProfilingConfig
from profiling import Profiler


def _worker(rank: int, world_size: int, init_file: str, run_dir: str) -> None:
    os.environ.pop("DIFFUSIONLM_NVTX", None)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        prof = Profiler(ProfilingConfig(start_step=1, stop_step=2, torch_trace=True), run_dir)
        for step in range(3):
            prof.step(step)
            with prof.range("all_reduce"):
                t = torch.ones(4) * (rank + 1)
                dist.all_reduce(t)
        prof.close()
        assert t.tolist() == [3.0] * 4
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_each_rank_writes_its_own_trace(tmp_path):
    # fork: the children reuse the imported torch instead of paying for a fresh interpreter each.
    mp.start_processes(
        _worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    traces = sorted(p.name for p in (tmp_path / "profile").iterdir())
    assert traces == ["trace_step1-2-rank0.json", "trace_step1-2-rank1.json"]

"""Capture window, torch.profiler trace export and the CPU no-op memory helpers, with a real tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from config.schema import ProfilingConfig
from profiling import Profiler, memory


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(32, 16)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(2))
        self.head = torch.nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = h + torch.relu(block(h))
        return self.head(h)


def _train(prof: Profiler, steps: int, instrument: bool = False) -> list[float]:
    """A miniature training loop instrumented the way the trainer is."""
    torch.manual_seed(0)
    model = _Tiny()
    if instrument:
        prof.instrument_module(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.randint(0, 32, (4, 8), generator=torch.Generator().manual_seed(1))
    losses = []
    for step in range(steps):
        prof.step(step)
        with prof.range("train_step"):
            with prof.range("forward"):
                logits = model(data)
            with prof.range("loss", "fine"):
                loss = torch.nn.functional.cross_entropy(logits.view(-1, 32), data.view(-1))
            with prof.range("backward"):
                loss.backward()
            with prof.range("optimizer_step"):
                opt.step()
                opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    prof.close()
    return losses


class _SeamRecorder(Profiler):
    """Records the CUDA profiler calls (the seams) so we can check when cudaProfilerStart/Stop would fire."""

    def __init__(self, *args, **kwargs) -> None:
        self.calls: list[str] = []
        super().__init__(*args, **kwargs)

    def _cuda_profiler_start(self) -> None:
        self.calls.append("start")
        super()._cuda_profiler_start()

    def _cuda_profiler_stop(self) -> None:
        self.calls.append("stop")
        super()._cuda_profiler_stop()


def test_window_opens_and_closes_at_the_configured_steps(tmp_path):
    prof = _SeamRecorder(ProfilingConfig(start_step=3, stop_step=6), tmp_path)
    assert prof.enabled and not prof.nvtx_enabled
    for step in range(10):
        prof.step(step)
        expected_calls = ["start"] if 3 <= step < 6 else (["start", "stop"] if step >= 6 else [])
        assert prof.calls == expected_calls, step
    prof.close()
    assert prof.window_events == [("start", 3), ("stop", 6)]
    assert prof.calls == ["start", "stop"]
    assert not (tmp_path / "profile").exists()  # no torch trace asked for


def test_window_resumed_inside_or_cut_short_by_the_end_of_training(tmp_path):
    resumed = Profiler(ProfilingConfig(start_step=20, stop_step=30), tmp_path)
    for step in range(25, 40):  # resumed from a checkpoint at step 25
        resumed.step(step)
    assert resumed.window_events == [("start", 25), ("stop", 30)]

    cut = Profiler(ProfilingConfig(start_step=2, stop_step=100), tmp_path)
    for step in range(5):
        cut.step(step)
    cut.close()
    cut.close()  # idempotent
    assert cut.window_events == [("start", 2), ("stop", 5)]

    never = Profiler(ProfilingConfig(start_step=50, stop_step=60), tmp_path)
    for step in range(5):
        never.step(step)
    never.close()
    assert never.window_events == []


def test_torch_trace_is_written_for_the_window_and_labelled_with_our_ranges(tmp_path):
    cfg = ProfilingConfig(start_step=2, stop_step=4, torch_trace=True, nvtx_level="fine")
    prof = Profiler(cfg, tmp_path)
    _train(prof, steps=6)
    path = tmp_path / "profile" / "trace_step2-4.json"
    assert prof.trace_path == path and path.is_file()
    events = json.loads(path.read_text())["traceEvents"]
    names = [e.get("name") for e in events]
    # Two steps inside the window, each labelled: NVTX itself is off, the trace still shows our phases.
    assert names.count("train_step") == 2 and names.count("loss") == 2
    assert any(n and n.startswith("aten::") for n in names)
    assert prof._active_rank == -1  # ranges are free again once the window closed
    assert prof.range("forward") is not None and prof.range("forward").__class__.__name__ == "nullcontext"


def test_trace_dir_override_and_block_ranges_in_the_trace(tmp_path):
    cfg = ProfilingConfig(
        nvtx=True, nvtx_level="fine", start_step=1, stop_step=2, torch_trace=True, trace_dir=str(tmp_path / "t")
    )
    prof = Profiler(cfg, tmp_path / "run")
    _train(prof, steps=3, instrument=True)
    names = {e.get("name") for e in json.loads((tmp_path / "t" / "trace_step1-2.json").read_text())["traceEvents"]}
    assert {"blocks.0", "blocks.1", "embed", "head", "forward"} <= names


def test_instrument_module_only_at_fine_level(tmp_path):
    model = _Tiny()
    coarse = Profiler(ProfilingConfig(nvtx=True, nvtx_level="coarse"), tmp_path)
    assert coarse.instrument_module(model) == []
    fine = Profiler(ProfilingConfig(nvtx=True, nvtx_level="fine"), tmp_path)
    handles = fine.instrument_module(model)
    assert len(handles) == 2 * 4  # pre + post hook for embed, blocks.0, blocks.1, head
    model(torch.zeros(1, 3, dtype=torch.long))
    for handle in handles:
        handle.remove()
    assert not model.blocks[0]._forward_pre_hooks


def test_profiling_does_not_change_the_numbers(tmp_path):
    plain = _train(Profiler(ProfilingConfig(), tmp_path), steps=5)
    cfg = ProfilingConfig(nvtx=True, nvtx_level="fine", start_step=1, stop_step=3, torch_trace=True)
    profiled = _train(Profiler(cfg, tmp_path), steps=5, instrument=True)
    assert plain == profiled
    assert plain[-1] < plain[0]


def test_memory_helpers_are_safe_no_ops_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    assert memory.start_history() is False
    assert memory.stop_history() is False
    assert memory.dump_snapshot(tmp_path / "snap.pickle") is False
    assert not (tmp_path / "snap.pickle").exists()
    assert memory.memory_summary() == {}
    assert memory.reset_peak() is False
    prof = Profiler(ProfilingConfig(start_step=0, stop_step=1, memory_history=True), tmp_path)
    _train(prof, steps=2)
    assert prof.snapshot_path is None and prof.memory_at_stop == {}


@pytest.mark.gpu
def test_memory_helpers_on_cuda(tmp_path):
    assert memory.reset_peak()
    assert memory.start_history()
    x = torch.empty(256, 1024, 1024, dtype=torch.uint8, device="cuda")  # 0.25 GiB
    summary = memory.memory_summary()
    assert summary["peak_allocated_gib"] >= 0.25 and summary["reserved_gib"] >= summary["allocated_gib"]
    assert memory.dump_snapshot(tmp_path / "snap.pickle")
    assert memory.stop_history()
    assert (tmp_path / "snap.pickle").stat().st_size > 0
    del x


@pytest.mark.gpu
def test_window_on_cuda_writes_trace_with_kernels_and_snapshot(tmp_path):
    cfg = ProfilingConfig(nvtx=True, start_step=1, stop_step=3, torch_trace=True, memory_history=True)
    prof = Profiler(cfg, tmp_path, device=torch.device("cuda"))
    model = torch.nn.Linear(512, 512).cuda()
    for step in range(4):
        prof.step(step)
        with prof.range("forward"):
            model(torch.randn(64, 512, device="cuda")).sum().backward()
    prof.close()
    events = json.loads(prof.trace_path.read_text())["traceEvents"]
    assert any(e.get("cat") == "kernel" for e in events)
    assert prof.snapshot_path is not None and prof.snapshot_path.stat().st_size > 0
    assert prof.memory_at_stop["peak_allocated_gib"] > 0

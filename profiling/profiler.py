"""The Profiler the trainer and sampler hold: NVTX ranges, a capture window, a torch.profiler trace."""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.schema import ProfilingConfig
from profiling import memory
from profiling.ranges import DOMAIN, LEVEL_RANK, NULL_RANGE, OFF, NvtxRange

if TYPE_CHECKING:
    import torch


class Profiler:
    """Built from [profiling]; cheap to call everywhere when everything is off.

    `step(n)` is called at the start of every micro-step (n = micro-steps completed). The capture window
    opens at `start_step` and closes at `stop_step`, so it covers micro-steps start..stop-1: nsys with
    `--capture-range=cudaProfilerApi` records exactly those, after warm-up and compilation.
    """

    def __init__(self, cfg: ProfilingConfig, run_dir: str | Path, device: torch.device | str = "cpu") -> None:
        import torch

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.nvtx_enabled, self.level = cfg.nvtx, cfg.nvtx_level
        self._nvtx_rank = LEVEL_RANK[self.level] if self.nvtx_enabled else OFF
        # The rank range() compares against; raised while a torch trace records so ranges label it.
        self._active_rank = self._nvtx_rank
        self.window = (cfg.start_step, cfg.stop_step) if cfg.start_step is not None else None
        self.enabled = self.nvtx_enabled or self.window is not None
        self.window_events: list[tuple[str, int]] = []
        self.trace_path: Path | None = None
        self.snapshot_path: Path | None = None
        self.memory_at_stop: dict[str, float] = {}

        self._domain = self._nvtx_domain() if self.nvtx_enabled else None
        self._tracing = [False]
        self._ranges: dict[str, NvtxRange] = {}
        self._window_open = False
        self._window_done = False
        self._window_start = -1
        self._last_step = -1
        self._torch_profile: Any = None
        self._emit_nvtx: Any = None
        if self._nvtx_rank >= LEVEL_RANK["verbose"] and self.window is None:
            self._start_emit_nvtx()  # no window: autograd ranges for the whole run

    # ---- NVTX ranges -------------------------------------------------------------------------------
    def range(self, name: str, level: str = "coarse") -> AbstractContextManager:
        """A context manager marking `name`; the shared null context when `level` is not enabled."""
        if LEVEL_RANK[level] > self._active_rank:
            return NULL_RANGE
        found = self._ranges.get(name)
        if found is None:
            found = self._ranges[name] = NvtxRange(self._domain, name, self._tracing)
        return found

    def instrument_module(self, model: torch.nn.Module, level: str = "fine") -> list[Any]:
        """Wrap each block of `model` in an NVTX range named after it (e.g. `blocks.3`) when `level` is on.

        Forward hooks keep model code free of profiling. Returns the hook handles (empty when off);
        `handle.remove()` undoes it.
        """
        if LEVEL_RANK[level] > self._nvtx_rank:
            return []
        handles = []
        for name, module in _blocks(model):
            block_range = NvtxRange(self._domain, name, self._tracing)
            handles.append(module.register_forward_pre_hook(_push_hook(block_range)))
            handles.append(module.register_forward_hook(_pop_hook(block_range)))
        return handles

    # ---- capture window ------------------------------------------------------------------------------
    def step(self, step: int) -> None:
        self._last_step = step
        if self.window is None or self._window_done:
            return
        start, stop = self.window
        if not self._window_open:
            # `start <= step` rather than `==`: a run resumed inside the window still captures the rest.
            if start <= step < stop:
                self._open_window(step)
        elif step >= stop:
            self._close_window(step)

    def close(self) -> None:
        """Close a window still open at the end of the run (stop_step past the last step) and write out."""
        if self._window_open:
            self._close_window(self._last_step + 1)
        if self._emit_nvtx is not None:
            self._emit_nvtx.__exit__(None, None, None)
            self._emit_nvtx = None

    def _open_window(self, step: int) -> None:
        self._window_open = True
        self._window_start = step
        self.window_events.append(("start", step))
        if self.cfg.memory_history:
            memory.reset_peak(self.device)
            memory.start_history(self.device)
        if self.cfg.torch_trace:
            self._start_torch_trace()
        if self._nvtx_rank >= LEVEL_RANK["verbose"]:
            self._start_emit_nvtx()
        # Last, so none of the setup above lands inside the nsys capture.
        self._cuda_profiler_start()

    def _close_window(self, step: int) -> None:
        self._cuda_profiler_stop()
        self._window_open = False
        self._window_done = True
        self.window_events.append(("stop", step))
        if self._emit_nvtx is not None:
            self._emit_nvtx.__exit__(None, None, None)
            self._emit_nvtx = None
        tag = f"step{self._window_start}-{step}{_rank_suffix()}"
        if self._torch_profile is not None:
            self._stop_torch_trace(self.output_dir / f"trace_{tag}.json")
        if self.cfg.memory_history:
            self.memory_at_stop = memory.memory_summary(self.device)
            snapshot = self.output_dir / f"memory_{tag}.pickle"
            if memory.dump_snapshot(snapshot, self.device):
                self.snapshot_path = snapshot
            memory.stop_history(self.device)

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.trace_dir) if self.cfg.trace_dir else self.run_dir / "profile"

    # ---- seams around the device-specific calls --------------------------------------------------
    def _cuda_profiler_start(self) -> None:
        if self.device.type == "cuda":
            import torch

            # Drain the warm-up work first so its kernels don't spill into the capture.
            torch.cuda.synchronize(self.device)
            torch.cuda.profiler.start()

    def _cuda_profiler_stop(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.profiler.stop()

    def _start_torch_trace(self) -> None:
        import torch

        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._torch_profile = torch.profiler.profile(activities=activities)
        self._torch_profile.start()
        self._tracing[0] = True
        # Label the trace with our ranges at the configured level even when NVTX itself is off.
        self._active_rank = max(self._nvtx_rank, LEVEL_RANK[self.cfg.nvtx_level])

    def _stop_torch_trace(self, path: Path) -> None:
        self._torch_profile.stop()
        self._tracing[0] = False
        self._active_rank = self._nvtx_rank
        path.parent.mkdir(parents=True, exist_ok=True)
        self._torch_profile.export_chrome_trace(str(path))
        self._torch_profile = None
        self.trace_path = path

    def _start_emit_nvtx(self) -> None:
        import torch

        emit = torch.autograd.profiler.emit_nvtx()
        try:
            emit.__enter__()
        except (AssertionError, RuntimeError) as err:  # CPU-only torch builds cannot emit NVTX
            warnings.warn(f"verbose NVTX level: autograd ranges unavailable ({err})", stacklevel=3)
            return
        self._emit_nvtx = emit

    @staticmethod
    def _nvtx_domain() -> Any:
        import nvtx

        return nvtx.get_domain(DOMAIN)


def _rank_suffix() -> str:
    """"-rank<r>" under a multi-process job, so ranks sharing a run dir don't overwrite each other's files."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return f"-rank{dist.get_rank()}"
    return ""


# Hooks must return None: a forward pre-hook's return value would replace the module's inputs.
def _push_hook(block_range: NvtxRange) -> Any:
    def push(_module: Any, _args: Any) -> None:
        block_range.__enter__()

    return push


def _pop_hook(block_range: NvtxRange) -> Any:
    def pop(_module: Any, _args: Any, _output: Any) -> None:
        block_range.__exit__()

    return pop


def _blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Direct children of `model`, with ModuleList/Sequential containers expanded into their items."""
    import torch

    found = []
    for name, child in model.named_children():
        if isinstance(child, torch.nn.ModuleList | torch.nn.Sequential):
            found.extend((f"{name}.{sub}", module) for sub, module in child.named_children())
        else:
            found.append((name, child))
    return found

"""On a GPU machine with Nsight Systems: a real capture holds our NVTX ranges for the window steps only."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest

_WORKLOAD = """
import sys, torch
from pathlib import Path
from config.schema import ProfilingConfig
from profiling import Profiler

cfg = ProfilingConfig(nvtx=True, nvtx_level="fine", start_step=3, stop_step=5)
prof = Profiler(cfg, Path(sys.argv[1]), torch.device("cuda"))

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(256, 256) for _ in range(2))

    def forward(self, x):
        for block in self.blocks:
            x = torch.relu(block(x))
        return x


model = Net().cuda()
prof.instrument_module(model)
for step in range(8):
    prof.step(step)
    with prof.range("train_step"):
        with prof.range("forward"):
            loss = model(torch.randn(32, 256, device="cuda")).square().mean()
        with prof.range("backward"):
            loss.backward()
prof.close()
"""


@pytest.mark.gpu
@pytest.mark.slow
def test_nsys_capture_window_holds_our_ranges(tmp_path):
    nsys = shutil.which("nsys")
    if nsys is None:
        pytest.skip("nsys not installed")
    script = tmp_path / "workload.py"
    script.write_text(_WORKLOAD)
    report = tmp_path / "prof"
    subprocess.run(
        [nsys, "profile", "-t", "cuda,nvtx,osrt", "--capture-range=cudaProfilerApi", "--capture-range-end=stop",
         "--force-overwrite=true", "-o", str(report), sys.executable, str(script), str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    stats = subprocess.run(
        [nsys, "stats", "--report", "nvtx_sum", "--format", "csv", f"{report}.nsys-rep"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout
    header = next(i for i, line in enumerate(stats.splitlines()) if "Range" in line and "Instances" in line)
    rows = list(csv.DictReader(stats.splitlines()[header:]))
    # nsys prints NVTX push/pop ranges as "<domain>:<name>" or ":<name>"; key by the bare name.
    instances = {row["Range"].rsplit(":", 1)[-1]: int(row["Instances"]) for row in rows}
    # Window = micro-steps 3 and 4: exactly two of each range, nothing from the 6 steps outside it.
    assert instances.get("train_step") == 2, stats
    assert instances.get("forward") == 2 and instances.get("backward") == 2, stats
    assert instances.get("blocks.0") == 2 and instances.get("blocks.1") == 2, stats

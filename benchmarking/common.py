"""What every benchmark shares: which machine and commit a number came from, and where results go.

A results file is `benchmarking/results/<bench>_<device>_<yyyy-mm-dd>.json`, one JSON document
`{"bench", "device", "date", "results": [...]}`; each run appends its record, so the configs measured
on one machine on one day sit side by side.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Dense bf16/fp16 tensor-core peaks from the vendors' datasheets (no sparsity), matched on the device name.
# H100/H200 SXM: 989 TFLOP/s. Order matters: the first substring found wins.
# jetson-orin-nano-8gb (a name for --estimate-device; the module itself reports just "Orin"): NVIDIA's Jetson
# Orin Nano Series datasheet gives the 8GB module 40 sparse / 20 dense INT8 TOPS (1024 CUDA cores, 32 tensor
# cores, GPU at 625 MHz); Ampere's tensor cores run fp16 at half their INT8 rate, hence 10 TFLOP/s dense fp16
# (= 32 tensor cores x 512 fp16 FLOP/clk x 625 MHz). The JetPack 6.2 "Super" clocks (1020 MHz) would give 16.7.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("JETSON-ORIN-NANO-8GB", 10e12),
    ("H100 PCIE", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
)


def git_commit() -> str:
    """$DIFFUSIONLM_COMMIT when set (a working tree copied to a GPU host may carry a stale .git), else HEAD of
    the checkout this code runs from, with `+dirty` when tracked files differ, else "unknown"."""
    if os.environ.get("DIFFUSIONLM_COMMIT"):
        return os.environ["DIFFUSIONLM_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, cwd=here)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device_name(device: Any = None) -> str:
    """Human name: the GPU's marketing name on CUDA, else the CPU and its core count."""
    import torch

    dev = torch.device(device) if device is not None else None
    if (dev is None or dev.type == "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return f"cpu {platform.machine()} x{os.cpu_count()}"


def device_slug(name: str) -> str:
    """Short file-name tag: "NVIDIA H100 80GB HBM3" -> "h100", "cpu x86_64 x2" -> "cpu-2core"."""
    if name.startswith("cpu"):
        cores = name.rsplit("x", 1)[-1]
        return f"cpu-{cores}core" if cores.isdigit() else "cpu"
    match = re.search(r"\b([A-Z]+\d{2,4}[A-Z]?)\b", name.upper())
    return match.group(1).lower() if match else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# HBM bandwidth from the vendors' datasheets (bytes/s), matched on the device name like the peaks above.
# jetson-orin-nano-8gb: 128-bit LPDDR5, 68 GB/s (the datasheet; 102 GB/s with the JetPack 6.2 "Super" clocks),
# shared by the CPU and the GPU.
PEAK_BANDWIDTH: tuple[tuple[str, float], ...] = (
    ("JETSON-ORIN-NANO-8GB", 68e9),
    ("H100 PCIE", 2.0e12),
    ("H100", 3.35e12),
    ("H200", 4.8e12),
    ("GH200", 4.0e12),
    ("A100", 2.0e12),
)


# Memory a benchmark may plan on (bytes) for a device whose CPU and GPU share it: its total less a reserve for
# what else lives there. Orin Nano 8GB: 8 GiB LPDDR5; the reserve of 2 GiB covers L4T without a desktop, the
# CUDA context and the PyTorch process's own libraries (a conservative allowance, not a measurement).
DEVICE_MEMORY: tuple[tuple[str, int, int], ...] = (
    ("JETSON-ORIN-NANO-8GB", 8 * 2**30, 2 * 2**30),
)


def device_memory(name: str) -> int | None:
    """Usable memory (total less reserve) of a device in DEVICE_MEMORY, None when unknown."""
    upper = name.upper()
    return next((total - reserve for key, total, reserve in DEVICE_MEMORY if key in upper), None)


def _datasheet(table: tuple[tuple[str, float], ...], name: str) -> float | None:
    upper = name.upper()
    return next((value for key, value in table if key in upper), None)


def peak_bandwidth(name: str) -> float | None:
    """Datasheet memory bandwidth for a known GPU name, None when unknown."""
    return _datasheet(PEAK_BANDWIDTH, name)


def peak_flops(name: str) -> float | None:
    """Dense bf16 peak for a known GPU name, None when unknown (then no MFU is reported)."""
    return _datasheet(PEAK_BF16_FLOPS, name)


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers ("1,32")."""
    import argparse

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated q-th percentile (q in [0, 100]) of a non-empty list."""
    if not values:
        raise ValueError("percentile of an empty list")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": percentile(values, 90), "mean": statistics.fmean(values),
            "min": min(values), "max": max(values)}


def today() -> str:
    return datetime.date.today().isoformat()


def default_result_path(bench: str, device: str, date: str | None = None) -> Path:
    return RESULTS_DIR / f"{bench}_{device_slug(device)}_{date or today()}.json"


def write_result(record: dict[str, Any], path: str | Path, bench: str, device: str) -> Path:
    """Append `record` to the results document at `path` (created when missing) and return the path.

    A file that exists but is not such a document is an error, never overwritten.
    """
    path = Path(path)
    if path.exists():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} exists but is not JSON ({e}); not overwriting it") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise ValueError(f"{path} exists but is not a results document (no 'results' list); not overwriting it")
    else:
        doc = {"bench": bench, "device": device, "date": today(), "results": []}
    doc["results"].append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# The shared TinyStories sample beside the checkout (never copied into the repository).
SHARED_TINYSTORIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories" / "train.jsonl"


def cpu_description() -> dict[str, Any]:
    return {"kind": "cpu", "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version()}


def display_paths(paths: list[str]) -> list[str]:
    """Paths as results record them: relative to the checkout, so no machine's layout is committed."""
    root = Path(__file__).resolve().parents[1]
    return [os.path.relpath(Path(p).resolve(), root) for p in paths]


def stream_local_jsonl(cfg: Any, jsonl: str | Path) -> bool:
    """Point `cfg.data` at a local jsonl file when it exists (True), else at the built-in corpus (False)."""
    if Path(jsonl).is_file():
        cfg.data.data_files, cfg.data.source = [str(jsonl)], "files"
        return True
    cfg.data.source = "builtin"
    return False


def emit_report(report: dict[str, Any], output: str | None) -> None:
    """Print a bench's JSON report, and write the same text to `output` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n", encoding="utf-8")


class GcPauses:
    """Collector passes (generation, seconds) while active: a full pass over a compiled model's objects can
    stall a step for tens of milliseconds, which shows as a slow outlier step."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._t0))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        return {f"gen{g}": {"count": sum(1 for gen, _ in self.pauses if gen == g),
                            "max_ms": max((d * 1e3 for gen, d in self.pauses if gen == g), default=0.0)}
                for g in (0, 1, 2)}


def reference_records(path: str | Path, bench: str, label: str) -> list[dict[str, Any]]:
    """The JSON lines of the reference's output (`python3 -m benchmarking.reference`) with this `bench` and
    `config` label, in order (lines that are not JSON objects are skipped)."""
    found = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("bench") == bench and rec.get("config") == label:
                found.append(rec)
    if not found:
        raise SystemExit(f"error: --reference {path}: no {bench} record with config {label!r}")
    return found

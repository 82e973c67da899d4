"""The GPU's SM clock, power draw and clock-limit reasons while a benchmark's timed steps run.

An H100 SXM running dense bf16 products at full tilt meets its 700 W power limit, and the driver then lowers
the SM clock below the 1980 MHz boost: tokens/s and MFU depend on it as much as on the code, and two
programs at the same limit can run at different clocks (the one doing more per joule runs slower per
instruction). A result that records the clocks it ran at can be read; one that does not invites wrong
conclusions. `nvidia-smi` ships with every NVIDIA driver, so it samples here (`--loop-ms`, in a child process,
nothing in the timed loop); where it is missing (a CPU host) the telemetry is simply absent.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import statistics
import subprocess
import threading
import time
from typing import Any

# nvidia-smi's clocks_event_reasons (formerly clocks_throttle_reasons) bit mask
REASON_BITS: dict[int, str] = {
    0x1: "idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
    0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks",
}
FIELDS = ("clocks.sm", "clocks.max.sm", "power.draw", "power.limit", "temperature.gpu")
REASON_FIELDS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")  # newer name, then older


def parse_sample(line: str) -> dict[str, Any] | None:
    """One `--format=csv,noheader,nounits` line of FIELDS (+ a reasons mask), or None if it is not one."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < len(FIELDS):
        return None
    try:
        clock, max_clock, power, limit, temp = (float(p) for p in parts[:len(FIELDS)])
    except ValueError:  # "[N/A]", an error message, a header
        return None
    sample: dict[str, Any] = {"sm_clock_mhz": clock, "max_sm_clock_mhz": max_clock, "power_w": power,
                              "power_limit_w": limit, "temperature_c": temp}
    if len(parts) > len(FIELDS):
        with contextlib.suppress(ValueError):  # "[N/A]": a GPU that does not report reasons
            sample["reasons"] = int(parts[len(FIELDS)], 16)
    return sample


def summarize_samples(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Medians and extremes over the samples, and the share of samples held back by each clock-limit reason."""
    if not samples:
        return None
    clocks = [s["sm_clock_mhz"] for s in samples]
    power = [s["power_w"] for s in samples]
    out: dict[str, Any] = {
        "samples": len(samples),
        "sm_clock_mhz": {"median": statistics.median(clocks), "min": min(clocks), "max": max(clocks)},
        "max_sm_clock_mhz": samples[0]["max_sm_clock_mhz"],
        "power_w": {"median": statistics.median(power), "max": max(power)},
        "power_limit_w": samples[0]["power_limit_w"],
        "temperature_c_max": max(s["temperature_c"] for s in samples),
    }
    masks = [s["reasons"] for s in samples if "reasons" in s]
    if masks:
        out["clock_limit_reasons"] = {name: round(sum(1 for m in masks if m & bit) / len(masks), 3)
                                      for bit, name in REASON_BITS.items() if any(m & bit for m in masks)}
    return out


class GpuTelemetry:
    """Context manager: samples GPU `gpu_id` (an nvidia-smi --id value: index, UUID or PCI bus id; None for
    no GPU) every `interval_ms` between enter and exit; `summary()` then describes what the GPU ran at (None
    without nvidia-smi or samples). `mark_start()` opens the window that counts (say, after warm-up steps):
    it only notes the time, so it costs nothing where it is called; sampling itself starts on enter, as
    starting nvidia-smi takes a fraction of a second."""

    def __init__(self, gpu_id: str | int | None, interval_ms: int = 100, executable: str = "nvidia-smi"):
        self.gpu_id, self.interval_ms = str(gpu_id), interval_ms
        self.executable = shutil.which(executable) if gpu_id is not None else None
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines: list[tuple[float, str]] = []  # (arrival time, line)
        self._window = (-math.inf, math.inf)
        self.samples: list[dict[str, Any]] = []

    def _query(self, reasons: str | None, loop: bool) -> list[str]:
        fields = ",".join(FIELDS + ((reasons,) if reasons else ()))
        return [str(self.executable), f"--query-gpu={fields}", "--format=csv,noheader,nounits",
                f"--id={self.gpu_id}", *([f"--loop-ms={self.interval_ms}"] if loop else [])]

    def _working_query(self) -> list[str] | None:
        # One sample first: a driver that does not know a field name fails the whole query (so try the
        # reasons' newer name, the older one, then none), and an id it does not know fails every one.
        for reasons in (*REASON_FIELDS, None):
            try:
                done = subprocess.run(self._query(reasons, loop=False), capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                return None
            if done.returncode == 0 and parse_sample(done.stdout.strip().splitlines()[0] if done.stdout else ""):
                return self._query(reasons, loop=True)
        return None

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._lines.append((time.monotonic(), line))

    def __enter__(self) -> GpuTelemetry:
        query = self._working_query() if self.executable is not None else None
        if query is None:
            return self
        try:
            self._proc = subprocess.Popen(query, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self._proc = None
            return self
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
        self._reader.start()
        return self

    def mark_start(self) -> None:
        self._window = (time.monotonic(), math.inf)

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._window = (self._window[0], time.monotonic())
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        start, end = self._window
        self.samples = [s for t, line in self._lines if start <= t <= end
                        for s in [parse_sample(line)] if s is not None]
        self._proc = self._reader = None

    def summary(self) -> dict[str, Any] | None:
        result = summarize_samples(self.samples)
        if result is not None:
            result["source"] = f"nvidia-smi every {self.interval_ms} ms"
        return result


def smi_id(device: Any) -> str | None:
    """The nvidia-smi id of a torch CUDA device: its UUID, which CUDA_VISIBLE_DEVICES renumbering leaves alone."""
    import torch

    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    uuid = str(getattr(props, "uuid", "") or "")
    if not uuid:
        return str(device.index or 0)
    return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"

"""GPU telemetry: parsing nvidia-smi's samples, summarising them, and the sampler's life cycle.

nvidia-smi cannot run without an NVIDIA GPU, so the life-cycle tests put a stand-in executable of that name
first on PATH; it answers in nvidia-smi's csv format with values measured on an H100 under load
(2026-11-22: 1730 MHz against a 1980 MHz maximum, 690 W against the 700 W limit, power-capped)."""

import os
import stat
import sys
import time

import pytest

from benchmarking.gpu_telemetry import GpuTelemetry, parse_sample, summarize_samples

H100_UNDER_LOAD = "1730, 1980, 690.74, 700.00, 60, 0x0000000000000004"
H100_AT_REST = "1980, 1980, 123.98, 700.00, 42, 0x0000000000000000"


def test_parse_sample_reads_fields_and_reasons_and_rejects_non_samples():
    s = parse_sample(H100_UNDER_LOAD)
    assert s == {"sm_clock_mhz": 1730.0, "max_sm_clock_mhz": 1980.0, "power_w": 690.74, "power_limit_w": 700.0,
                 "temperature_c": 60.0, "reasons": 0x4}
    assert "reasons" not in parse_sample("1730, 1980, 690.74, 700.00, 60, [N/A]")
    assert "reasons" not in parse_sample("1730, 1980, 690.74, 700.00, 60")
    for junk in ("", "clocks.current.sm [MHz], power.draw [W]", "1730, 1980, [N/A], 700.00, 60",
                 "Failed to initialize NVML: Driver/library version mismatch"):
        assert parse_sample(junk) is None


def test_summary_gives_medians_extremes_and_share_of_power_capped_samples():
    samples = [parse_sample(line) for line in [H100_UNDER_LOAD] * 3 + [H100_AT_REST]]
    s = summarize_samples(samples)
    assert s["samples"] == 4
    assert s["sm_clock_mhz"] == {"median": 1730.0, "min": 1730.0, "max": 1980.0}
    assert s["max_sm_clock_mhz"] == 1980.0 and s["power_limit_w"] == 700.0
    assert s["power_w"]["max"] == 690.74 and s["power_w"]["median"] == 690.74
    assert s["temperature_c_max"] == 60.0
    assert s["clock_limit_reasons"] == {"sw_power_cap": 0.75}
    assert summarize_samples([]) is None


def _stand_in_smi(directory, knows_new_field: bool, known_id: str = "GPU-test") -> None:
    """An executable `nvidia-smi` answering --query-gpu in csv; with --loop-ms it reports an idle GPU for
    0.3 s, then one under load, until it is terminated."""
    script = directory / "nvidia-smi"
    script.write_text(f"""#!{sys.executable}
import sys, time
args = " ".join(sys.argv[1:])
if "clocks_event_reasons" in args and not {knows_new_field}:
    print('Field "clocks_event_reasons.active" is not a valid field to query.'); sys.exit(2)
assert "--format=csv,noheader,nounits" in args
if "--id={known_id}" not in args:
    print("No devices were found"); sys.exit(6)
if "--loop-ms" not in args:
    print("{H100_AT_REST}"); sys.exit(0)
t0 = time.monotonic()
while True:
    print("{H100_AT_REST}" if time.monotonic() - t0 < 0.3 else "{H100_UNDER_LOAD}", flush=True)
    time.sleep(0.02)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("knows_new_field", [True, False])
def test_sampler_keeps_the_samples_after_mark_start_with_either_reasons_field_name(tmp_path, monkeypatch,
                                                                                   knows_new_field):
    _stand_in_smi(tmp_path, knows_new_field)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with GpuTelemetry("GPU-test", interval_ms=20) as t:
        time.sleep(1.0)  # the idle phase (the benchmark's warm-up) passes before the window opens
        t.mark_start()
        time.sleep(0.5)
    assert t._proc is None  # the child was stopped
    s = t.summary()
    assert s is not None and s["samples"] >= 5
    assert s["sm_clock_mhz"] == {"median": 1730.0, "min": 1730.0, "max": 1730.0}  # no idle sample counted
    assert s["clock_limit_reasons"] == {"sw_power_cap": 1.0}
    assert "nvidia-smi" in s["source"]


def test_without_mark_start_every_sample_counts(tmp_path, monkeypatch):
    _stand_in_smi(tmp_path, True)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with GpuTelemetry("GPU-test", interval_ms=20) as t:
        time.sleep(1.0)
    s = t.summary()
    assert s["sm_clock_mhz"]["max"] == 1980.0 and s["sm_clock_mhz"]["min"] == 1730.0


def test_an_id_nvidia_smi_does_not_know_starts_no_sampler(tmp_path, monkeypatch):
    _stand_in_smi(tmp_path, True, known_id="GPU-other")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with GpuTelemetry("GPU-test", interval_ms=20) as t:
        assert t._proc is None
        t.mark_start()
    assert t.summary() is None


def test_no_gpu_or_no_nvidia_smi_means_no_telemetry_and_no_error(tmp_path, monkeypatch):
    with GpuTelemetry(None) as t:
        pass
    assert t.summary() is None
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no nvidia-smi anywhere
    with GpuTelemetry(0) as t:
        pass
    assert t.summary() is None

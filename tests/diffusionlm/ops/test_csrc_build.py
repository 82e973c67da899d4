"""Building and finding the compiled kernels: the fallback when they cannot be had (a source that does not
compile, no compiler, switched off, a stale prebuilt), and the CUDA kernels compiled alone with nvcc."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from diffusionlm.ops import build_kernels, csrc

# Run in a fresh interpreter: a process that loaded the library keeps it, and these paths must not find it.
FALLBACK_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import torch
    from diffusionlm.ops import csrc

    broken, build = Path(sys.argv[1]), Path(sys.argv[2])
    report = {"untouched_at_import": csrc._state is None and not build.exists()}
    report["broken"] = [csrc.load(jit=True, source_dir=broken, build_dir=build / "broken"), csrc.status()]
    os.environ["CXX"] = "/nonexistent/c++"
    report["no_compiler"] = [csrc.load(jit=True, build_dir=build / "nocc"), csrc.status()]
    del os.environ["CXX"]
    report["off"] = [csrc.load("off"), csrc.status()]
    report["available"] = csrc.available()

    logits = torch.randn(4, 23)
    keys = torch.randint(0, 2**32, (4,)), torch.randint(0, 2**32, (4,))
    tokens, conf = csrc.draw(logits, *keys, 0.8, 1, 2)
    ref = csrc.draw_reference(logits, *keys, 0.8, 1, 2)
    x = torch.randn(2, 16)
    out, _ = csrc.rms_norm(x, torch.ones(16), 1e-6)
    report["fallback_runs"] = (torch.equal(tokens, ref[0]) and torch.equal(conf, ref[1])
                               and torch.equal(out, csrc.rms_norm_reference(x, torch.ones(16), 1e-6)[0]))
    print(json.dumps(report))
""")


def test_fallback_when_the_library_cannot_be_had(tmp_path: Path):
    broken = tmp_path / "csrc"
    broken.mkdir()
    for name in csrc.CPU_SOURCES:
        (broken / name).write_text("// compiles\n")
    (broken / "draw_cpu.cpp").write_text("this is not C++;\n")
    run = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT, str(broken), str(tmp_path / "build")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["untouched_at_import"]  # importing the module builds and loads nothing
    loaded, message = report["broken"]
    assert not loaded
    assert message.startswith("PyTorch fallback: building diffusionlm_csrc failed:") and "error" in message
    assert "draw_cpu.cpp" in message and "\n" not in message
    loaded, message = report["no_compiler"]
    assert not loaded and message == "PyTorch fallback: no C++ compiler: '/nonexistent/c++' is not on PATH " \
                                     "(install g++ or set CXX)"
    assert report["off"] == [False, "PyTorch fallback: kernels.csrc = 'off'"]
    assert report["available"] is False
    assert report["fallback_runs"]


def test_prebuilt_must_fit_this_torch_and_the_sources(tmp_path: Path):
    sources, build = tmp_path / "csrc", tmp_path / "build"
    sources.mkdir()
    (sources / "ops.cpp").write_text("// v1\n")
    with pytest.raises(csrc.BuildError, match="no prebuilt library"):
        csrc._find_prebuilt(build, sources)
    build.mkdir()
    csrc.library_path(build).write_bytes(b"")
    info = {"torch": "1.0.0", "sources": csrc.source_hash(sources)}
    (build / csrc.BUILD_INFO).write_text(json.dumps(info))
    with pytest.raises(csrc.BuildError, match=r"built for torch 1\.0\.0"):
        csrc._find_prebuilt(build, sources)
    info["torch"] = torch.__version__
    (build / csrc.BUILD_INFO).write_text(json.dumps(info))
    assert csrc._find_prebuilt(build, sources) == csrc.library_path(build)
    (sources / "ops.cpp").write_text("// v2\n")
    with pytest.raises(csrc.BuildError, match="changed since"):
        csrc._find_prebuilt(build, sources)


def test_cuda_kernels_compile_for_orin_and_hopper(tmp_path: Path):
    """csrc/kernels_check.cu (every .cuh kernel, no torch) through nvcc: GPU code for sm_87 and sm_90."""
    if build_kernels.find_cuda_tool("nvcc") is None:
        pytest.skip("nvcc not found")
    check = build_kernels.check_cuda_source(csrc.SOURCE_DIR, tmp_path)
    assert "sm_87" in check.listing and "sm_90" in check.listing, check.listing
    # the fatbinary reader (for machines without cuobjdump) agrees with cuobjdump where both exist
    from_headers = build_kernels.fatbin_listing(check.obj)
    assert [line.split(".")[-2] for line in from_headers.splitlines()] == ["sm_87", "sm_90"]
    if "cuobjdump" in check.lister:
        assert [line.split(".")[-2] for line in check.listing.splitlines()] == ["sm_87", "sm_90"]


def test_cli_reports_a_failed_build(tmp_path: Path):
    broken = tmp_path / "csrc"
    broken.mkdir()
    for name in csrc.CPU_SOURCES:
        (broken / name).write_text("#error this build must fail\n")
    run = subprocess.run([sys.executable, "-m", "diffusionlm.ops.build_kernels", "--cpu-only", "--source-dir",
                          str(broken), "--build-dir", str(tmp_path / "build")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1
    assert "CUDA kernels: no (--cpu-only)" in run.stdout
    assert "build-kernels: building diffusionlm_csrc failed:" in run.stderr and "#error" in run.stderr
    assert not (tmp_path / "build" / csrc.BUILD_INFO).exists()


def test_cli_check_skips_without_nvcc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(build_kernels, "find_cuda_tool", lambda name: None)
    assert build_kernels.main(["--check-cuda-source"]) == 0
    assert capsys.readouterr().out.startswith("check-cuda-source: skipped: nvcc not found")

"""Build the compiled kernels of `csrc/` into `csrc/build/`, where `diffusionlm.ops.csrc` finds them.

    python3 -m diffusionlm.ops.build_kernels [--arch "8.7;9.0"] [--cpu-only] [--jit] [--verbose]
    python3 -m diffusionlm.ops.build_kernels --check-cuda-source
    python3 -m diffusionlm.ops.build_kernels [--arch 8.7] --parity

The build is `torch.utils.cpp_extension.load(..., is_python_module=False)`: ninja, incremental, the flags torch
itself wants, and a load of the result at the end, so a library that does not load is caught here and not at
its first use. The CPU kernels are always built; the CUDA kernels when torch is a CUDA build and a toolkit is
found, for `--arch` (TORCH_CUDA_ARCH_LIST; default 8.7;9.0: the Jetson Orin and H100). A build on the Jetson
itself may pass --arch 8.7 to halve its time. `--jit` builds through `csrc.load(jit=True)` instead, the path a
process takes with `[kernels] csrc = "jit"`, and prints what it decided.

`--check-cuda-source` compiles the device kernels alone, without torch (`csrc/kernels_check.cu` instantiates
every kernel of the .cuh headers), with nvcc for sm_87 and sm_90, and lists the object's GPU code with
`cuobjdump --list-elf` (or, without cuobjdump, from the fatbinary's own headers). It needs nvcc only, so the
kernels are checked for both targets on machines with neither a GPU nor a CUDA torch.

`--parity` builds, then runs the compiled ops against their PyTorch fallbacks (`csrc.*_reference`) on a few
shapes on every device they were compiled for, and exits 1 on any mismatch: the check a freshly deployed device
(`just deploy-jetson`) runs before it is trusted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from diffusionlm.ops.csrc import (
    BUILD_DIR,
    BUILD_INFO,
    CPU_SOURCES,
    CUDA_SOURCES,
    LIBRARY_NAME,
    SOURCE_DIR,
    BuildError,
    library_path,
    source_hash,
)

log = logging.getLogger(__name__)

DEFAULT_ARCHS = "8.7;9.0"  # Jetson Orin (sm_87) and H100 (sm_90)
CHECK_SOURCE = "kernels_check.cu"


# --- the library -------------------------------------------------------------------------------------------------


@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    """`name` set to `value` (None: left as it is) for the duration, then restored."""
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _error_lines(output: str, limit: int = 20) -> list[str]:
    """The compiler's diagnostics ("file:line:col: error: ...") in a failed build's output, else its last lines
    (a linker's or ninja's complaint)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    diagnostics = [line for line in lines if ": error" in line or "fatal error" in line]
    return (diagnostics or lines[-limit:])[:limit]


def build_library(source_dir: Path = SOURCE_DIR, build_dir: Path = BUILD_DIR, *, with_cuda: bool,
                  arch_list: str | None = None, verbose: bool = False) -> Path:
    """Compile and link `source_dir` into `build_dir`/diffusionlm_csrc.so (loading it into this process, as
    cpp_extension does) and record the torch and sources it was built from. arch_list None: TORCH_CUDA_ARCH_LIST
    as set, else the GPUs of this machine. Raises BuildError with a one-line reason; the compiler's complaints go
    to the log."""
    from torch.utils import cpp_extension

    compiler = (shlex.split(os.environ.get("CXX", "")) or ["c++"])[0]  # as cpp_extension reads it ("ccache g++")
    if shutil.which(compiler) is None:
        raise BuildError(f"no C++ compiler: {compiler!r} is not on PATH (install g++ or set CXX)")
    if not cpp_extension.is_ninja_available():
        raise BuildError("ninja is not installed (pip install ninja)")
    names = CPU_SOURCES + (CUDA_SOURCES if with_cuda else ())
    missing = [name for name in names if not (source_dir / name).is_file()]
    if missing:
        raise BuildError(f"no kernel sources {', '.join(missing)} in {source_dir} (build from a checkout)")
    build_dir.mkdir(parents=True, exist_ok=True)
    with _env("TORCH_CUDA_ARCH_LIST", arch_list if with_cuda else None):
        try:
            built = cpp_extension.load(
                name=LIBRARY_NAME,
                sources=[str(source_dir / name) for name in names],
                # no fast-math anywhere: the draws must round log and division as the other paths do
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3"],
                extra_include_paths=[str(source_dir)],
                build_directory=str(build_dir),
                with_cuda=with_cuda,
                is_python_module=False,
                verbose=verbose,
            )
        except (RuntimeError, subprocess.CalledProcessError) as e:
            errors = _error_lines(str(e))
            log.warning("building %s in %s failed:\n  %s", LIBRARY_NAME, build_dir, "\n  ".join(errors))
            raise BuildError(f"building {LIBRARY_NAME} failed: {errors[0] if errors else e}") from e
        info = {
            "torch": torch.__version__,
            "cuda": with_cuda,
            "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if with_cuda else None,
            "sources": source_hash(source_dir),
        }
    target = library_path(build_dir)
    if Path(built) != target:  # cpp_extension renames a second build of other sources in one process (_v1)
        shutil.copy2(built, target)
    (build_dir / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return target


def cuda_buildable() -> tuple[bool, str]:
    """Whether this machine can build the CUDA kernels ahead of time (no GPU needed), and why not."""
    from torch.utils.cpp_extension import CUDA_HOME

    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is not a CUDA build"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit (set CUDA_HOME, or put nvcc on PATH)"
    return True, f"CUDA {torch.version.cuda}, toolkit {CUDA_HOME}"


# --- the CUDA source check ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CudaCheck:
    obj: Path
    listing: str  # one line per GPU code image, cuobjdump's "ELF file N: name.sm_87.cubin" style
    lister: str  # what made the listing


def find_cuda_tool(name: str) -> str | None:
    """`name` (nvcc, cuobjdump) on PATH, in the toolkit, or in NVIDIA's pip packages (nvidia/cu*/bin)."""
    found = shutil.which(name)
    if found:
        return found
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for root in filter(None, roots):
        candidate = Path(root) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    try:
        import nvidia  # namespace package of NVIDIA's wheels, where they are installed
    except ImportError:
        return None
    for base in getattr(nvidia, "__path__", []):
        for candidate in sorted(Path(base).glob(f"*/bin/{name}")):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def fatbin_listing(obj: Path) -> str:
    """The GPU code images of a host object, read from its .nv_fatbin section's headers: each container is a
    16-byte header (magic 0xBA55ED50, version, header size, payload size) and entries whose header holds the kind
    (1 PTX, 2 ELF) and, 28 bytes in, the SM version. For machines without cuobjdump."""
    data = obj.read_bytes()
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = sections[shstrndx][4]

    def name(offset: int) -> str:
        return data[names_at + offset: data.index(b"\0", names_at + offset)].decode()

    lines, count = [], 0
    for sh_name, _type, _flags, _addr, offset, size in sections:
        if name(sh_name) != ".nv_fatbin":
            continue
        at, end = offset, offset + size
        while at + 16 <= end:
            magic, _version, header_size, payload = struct.unpack_from("<IHHQ", data, at)
            if magic != 0xBA55ED50:
                break
            entry, stop = at + header_size, at + header_size + payload
            while entry < stop:
                kind, _flags, entry_header, entry_size = struct.unpack_from("<HHIQ", data, entry)
                sm = struct.unpack_from("<I", data, entry + 28)[0]
                count += 1
                label = {1: "PTX file", 2: "ELF file"}.get(kind, f"kind {kind}")
                lines.append(f"{label} {count:4d}: {obj.stem}.{count}.sm_{sm}.{'cubin' if kind == 2 else 'ptx'}")
                entry += entry_header + entry_size
            at = stop
    return "\n".join(lines)


def check_cuda_source(source_dir: Path = SOURCE_DIR, out_dir: Path | None = None,
                      archs: tuple[str, ...] = ("87", "90")) -> CudaCheck:
    """Compile `source_dir`/kernels_check.cu (the .cuh kernels, no torch) with nvcc for `archs` into an object
    and list its GPU code. Raises FileNotFoundError when nvcc is absent, CalledProcessError when nvcc fails."""
    nvcc = find_cuda_tool("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (PATH, CUDA_HOME, /usr/local/cuda)")
    out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="dlm-cuda-check-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    obj = out_dir / "kernels_check.o"
    gencode = [flag for arch in archs for flag in ("-gencode", f"arch=compute_{arch},code=sm_{arch}")]
    subprocess.run([nvcc, "-std=c++17", "-O3", *gencode, "-I", str(source_dir), "-c",
                    str(source_dir / CHECK_SOURCE), "-o", str(obj)], check=True, capture_output=True, text=True)
    cuobjdump = find_cuda_tool("cuobjdump")
    if cuobjdump is None:
        return CudaCheck(obj, fatbin_listing(obj), "the fatbinary's headers (cuobjdump not found)")
    listing = subprocess.run([cuobjdump, "--list-elf", str(obj)], check=True, capture_output=True, text=True)
    return CudaCheck(obj, listing.stdout.strip(), cuobjdump)


# --- command line ------------------------------------------------------------------------------------------------


def _run_check(source_dir: Path, out_dir: Path) -> int:
    try:
        check = check_cuda_source(source_dir, out_dir)
    except FileNotFoundError as e:
        print(f"check-cuda-source: skipped: {e}")
        return 0
    except subprocess.CalledProcessError as e:
        print(f"check-cuda-source: nvcc failed:\n{e.stderr}", file=sys.stderr)
        return 1
    print(f"check-cuda-source: {check.obj} (listed by {check.lister})\n{check.listing}")
    missing = [arch for arch in ("sm_87", "sm_90") if arch not in check.listing]
    if missing:
        print(f"check-cuda-source: no code for {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


# --- parity against the PyTorch fallbacks --------------------------------------------------------------------------

# (rows, vocab) of `draw` and (rows, width) of `rms_norm`: a tiny, an odd and a vocabulary-sized row.
PARITY_SHAPES = ((1, 1), (3, 7), (4, 4097))


def parity_check(devices: frozenset[str] | None = None) -> list[str]:
    """Mismatches between the loaded compiled ops and their PyTorch fallbacks on PARITY_SHAPES, one line each, on
    `devices` (default: those the library was compiled for). Tolerances are the csrc tests': draw's tokens exact
    and confidence to 1e-12; rms_norm to float32 accumulation order (fp16 to its own rounding)."""
    from diffusionlm.ops import csrc

    problems: list[str] = []
    for device in sorted(devices if devices is not None else csrc.devices()):
        g = torch.Generator().manual_seed(0)
        dtypes = (torch.float32, torch.float16) if device == "cuda" else (torch.float32,)
        for rows, width in PARITY_SHAPES:
            logits = (torch.randn(rows, width, generator=g) * 3).to(device)
            keys = torch.randint(0, 2**32, (2, rows), generator=g, dtype=torch.int64).to(device)
            forbid = (0, width - 1) if width > 2 else (-1, -1)  # never forbid every id of a tiny vocabulary
            for temperature in (0.0, 0.8):
                tokens, confidence = torch.ops.diffusionlm.draw(logits, keys[0], keys[1], temperature, *forbid)
                ref_t, ref_c = csrc.draw_reference(logits, keys[0], keys[1], temperature, *forbid)
                if not torch.equal(tokens, ref_t) or not torch.allclose(confidence, ref_c, rtol=1e-12, atol=0):
                    problems.append(f"draw on {device}, {rows}x{width}, T={temperature}: differs from draw_reference")
            for dtype in dtypes:
                x = torch.randn(rows, width, generator=g).to(device, dtype)
                residual = torch.randn(rows, width, generator=g).to(device, dtype)
                weight = (1 + torch.randn(width, generator=g) / 4).to(device, dtype)
                out, new_res = torch.ops.diffusionlm.rms_norm(x, weight, 1e-6, residual)
                ref_out, ref_res = csrc.rms_norm_reference(x, weight, 1e-6, residual)
                tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-3, "atol": 2e-3}
                if not (torch.allclose(out, ref_out, **tol) and torch.equal(new_res, ref_res)):
                    problems.append(f"rms_norm on {device}, {rows}x{width}, {dtype}: differs from rms_norm_reference")
    return problems


def _run_parity(build_dir: Path, source_dir: Path) -> int:
    from diffusionlm.ops import csrc

    if not csrc.load(source_dir=source_dir, build_dir=build_dir):
        print(f"parity: the compiled ops are not loaded: {csrc.status()}", file=sys.stderr)
        return 1
    problems = parity_check()
    for line in problems:
        print(f"parity: {line}", file=sys.stderr)
    checked = ", ".join(sorted(csrc.devices()))
    print(f"parity: {'FAILED' if problems else 'ok'}: compiled ops vs PyTorch fallbacks on {checked}, "
          f"{len(PARITY_SHAPES)} shapes")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m diffusionlm.ops.build_kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default=None,
                        help=f"TORCH_CUDA_ARCH_LIST for the CUDA kernels (default: the variable, else {DEFAULT_ARCHS})")
    parser.add_argument("--cpu-only", action="store_true", help="build the CPU kernels only")
    parser.add_argument("--jit", action="store_true", help="build through csrc.load(jit=True) and print its status")
    parser.add_argument("--source-dir", type=Path, default=SOURCE_DIR)
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    parser.add_argument("--check-cuda-source", action="store_true",
                        help="compile the CUDA kernels alone with nvcc for sm_87 and sm_90 and list the code")
    parser.add_argument("--verbose", action="store_true", help="show the compiler's commands and output")
    parser.add_argument("--parity", action="store_true",
                        help="after the build, compare the compiled ops with their PyTorch fallbacks (exit 1 on a "
                             "mismatch)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check_cuda_source:
        return _run_check(args.source_dir, args.build_dir / "cuda-check")

    with_cuda, why = cuda_buildable()
    if args.cpu_only:
        with_cuda, why = False, "--cpu-only"
    arch_list = args.arch or os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
    print(f"build-kernels: CPU kernels; CUDA kernels: {f'yes, for {arch_list}' if with_cuda else 'no'} ({why})")
    if args.jit:
        from diffusionlm.ops import csrc

        with _env("TORCH_CUDA_ARCH_LIST", arch_list if with_cuda else None):
            loaded = csrc.load(jit=True, source_dir=args.source_dir, build_dir=args.build_dir, verbose=args.verbose)
        print(f"build-kernels: {csrc.status()}")
        if loaded and args.parity:
            return _run_parity(args.build_dir, args.source_dir)
        return 0 if loaded else 1
    try:
        lib = build_library(args.source_dir, args.build_dir, with_cuda=with_cuda, arch_list=arch_list,
                            verbose=args.verbose)
    except BuildError as e:
        print(f"build-kernels: {e}", file=sys.stderr)
        return 1
    print(f"build-kernels: {lib}")
    return _run_parity(args.build_dir, args.source_dir) if args.parity else 0


if __name__ == "__main__":
    sys.exit(main())

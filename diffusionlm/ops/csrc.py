"""The compiled C++/CUDA kernels of `csrc/` behind one front: `draw` and `rms_norm`, each with a PyTorch fallback
of the same semantics that runs wherever the library is not loaded.

The kernels serve where Triton does not run (the edge target, a Jetson Orin, sm_87) and CPUs, and H100 (sm_90)
alike. They are torch operators, `torch.ops.diffusionlm.draw` and `torch.ops.diffusionlm.rms_norm` (schemas in
`csrc/ops.cpp`), with fake kernels registered here, so torch.compile and CUDA graph capture trace through them.

Nothing builds at import time, and nothing here raises for want of a compiler: the first call of an op, or
`load()`, decides once per process which path runs, says why in `status()` (logged once), and falls back to
PyTorch when the library cannot be had:
- `auto` (the default): the prebuilt library of `python3 -m diffusionlm.ops.build_kernels` in `csrc/build/`, if
  it was built for this torch and from the current sources;
- `jit`: build it first (`torch.utils.cpp_extension`, incremental; the result lands where `auto` finds it);
- `off`: the PyTorch fallback.
`load(mode)` asks for one of these; a run's `[kernels] csrc` chooses it (`resolve_kernels`).
Under torch.compile, decide first (call `load()` or an op once in eager mode): the decision itself is file
system work that a traced function cannot hold.

This module imports nothing of `diffusionlm.inference`: the fallback re-implements the counter-based uniforms of
`inference/streams.py` (the tests check the two, and the compiled op, agree bit for bit).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LIBRARY_NAME = "diffusionlm_csrc"
SOURCE_DIR = Path(__file__).resolve().parents[2] / "csrc"  # the repository's csrc/ (absent from a wheel)
BUILD_DIR = SOURCE_DIR / "build"
CPU_SOURCES = ("ops.cpp", "draw_cpu.cpp", "rms_norm_cpu.cpp")
CUDA_SOURCES = ("ops_cuda.cu",)
BUILD_INFO = "build_info.json"  # beside the library: the torch it was built for and a hash of its sources

# streams.py's constants: lowbias32's multipliers, the two vocabulary salts
_C1, _C2 = 0x7FEB352D, 0x846CA68B
_VOCAB_SALT = (0x9E3779B9, 0x85EBCA6B)
_M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class _State:
    loaded: bool
    devices: frozenset[str]  # device types the compiled ops have kernels for
    message: str


_state: _State | None = None  # None until the first load() or op call
_fakes_registered = False


class BuildError(RuntimeError):
    """The library cannot be had: no compiler, no sources, a failed build, a stale or foreign prebuilt."""


# --- loading --------------------------------------------------------------------------------------------------


def source_hash(source_dir: Path) -> str:
    """sha256 of every source and header of `source_dir` (name and content), to tell a stale build."""
    digest = hashlib.sha256()
    for path in sorted(source_dir.iterdir()):
        if path.suffix in {".h", ".cuh", ".cpp", ".cu"}:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def library_path(build_dir: Path) -> Path:
    return build_dir / f"{LIBRARY_NAME}.so"


def _ops_defined() -> bool:
    """Whether diffusionlm::draw exists in this process (the library was loaded, by us or anyone)."""
    try:
        torch.ops.diffusionlm.draw  # noqa: B018 (the lookup raises when the op is not defined)
    except (AttributeError, RuntimeError):
        return False
    return True


def _compiled_devices() -> frozenset[str]:
    cuda = torch._C._dispatch_has_kernel_for_dispatch_key("diffusionlm::draw", "CUDA")
    return frozenset({"cpu", "cuda"} if cuda else {"cpu"})


def _find_prebuilt(build_dir: Path, source_dir: Path) -> Path:
    """The prebuilt library in `build_dir`, if it fits this torch and the current sources; else BuildError."""
    lib, info_path = library_path(build_dir), build_dir / BUILD_INFO
    rebuild = "python3 -m diffusionlm.ops.build_kernels"
    if not lib.is_file() or not info_path.is_file():
        raise BuildError(f"no prebuilt library in {build_dir} (build it: {rebuild}, or set kernels.csrc = 'jit')")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as e:
        raise BuildError(f"unreadable {info_path} ({e}): rebuild ({rebuild})") from e
    if info.get("torch") != torch.__version__:
        raise BuildError(f"{lib} was built for torch {info.get('torch')}, this is {torch.__version__}: "
                         f"rebuild ({rebuild})")
    if source_dir.is_dir() and info.get("sources") != source_hash(source_dir):
        raise BuildError(f"{source_dir} changed since {lib} was built: rebuild ({rebuild})")
    return lib


def load(mode: str = "auto", *, jit: bool | None = None, source_dir: Path | None = None,
         build_dir: Path | None = None, verbose: bool = False) -> bool:
    """Load the compiled ops into this process (once; a failed attempt may be retried, say with mode "jit").
    `mode`: "auto" (the prebuilt library), "jit" (build first) or "off"; `jit` True/False overrides it. Returns
    whether they are loaded; `status()` says why. Never raises for a missing compiler or a failed build: the
    ops then run their PyTorch fallback."""
    if mode not in ("auto", "jit", "off"):
        raise ValueError(f"kernels.csrc must be auto, jit or off, got {mode!r}")
    if _state is not None and _state.loaded:
        return True
    source_dir = Path(source_dir) if source_dir is not None else SOURCE_DIR
    build_dir = Path(build_dir) if build_dir is not None else BUILD_DIR
    if _ops_defined():  # loaded already (torch.ops.load_library); a second copy could not register its schemas
        _register_fakes()
        _set_state(_State(True, _compiled_devices(), "compiled diffusionlm ops (loaded before load())"))
        return True
    if jit is None and mode == "off":
        _set_state(_State(False, frozenset(), "PyTorch fallback: kernels.csrc = 'off'"))
        return False
    jit = mode == "jit" if jit is None else jit
    try:
        if jit:
            from diffusionlm.ops.build_kernels import build_library

            lib = build_library(source_dir, build_dir, with_cuda=_jit_with_cuda(), verbose=verbose)
        else:
            lib = _find_prebuilt(build_dir, source_dir)
        if not _ops_defined():  # a build has loaded its library already; a second copy must not load
            torch.ops.load_library(str(lib))
    except Exception as e:  # whatever goes wrong with a toolchain or a library, the ops still run: the fallback
        level = logging.INFO if isinstance(e, BuildError) and not jit else logging.WARNING
        reason = _one_line(e) if isinstance(e, BuildError) else f"{type(e).__name__}: {_one_line(e)}"
        _set_state(_State(False, frozenset(), f"PyTorch fallback: {reason}"), level)
        return False
    _register_fakes()
    devices = _compiled_devices()
    _set_state(_State(True, devices, f"compiled diffusionlm ops from {lib} ({', '.join(sorted(devices))})"))
    return True


def _jit_with_cuda() -> bool:
    """Whether a build at first use compiles the CUDA kernels: only where they can run here."""
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.cuda.is_available() and CUDA_HOME is not None


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _set_state(state: _State, level: int = logging.INFO) -> None:
    global _state
    if _state is None or state.message != _state.message:
        log.log(level, "csrc: %s", state.message)
    _state = state


def _ensure_state() -> _State:
    if _state is None:
        load()
    assert _state is not None
    return _state


def available() -> bool:
    """Whether the compiled ops are loaded (tries the prebuilt library, as the first op call would)."""
    return _ensure_state().loaded


def status() -> str:
    """Which path the ops take in this process, and why (decided on first use; logged once)."""
    return _ensure_state().message


def devices() -> frozenset[str]:
    """Device types the loaded ops have compiled kernels for (empty when the fallback runs)."""
    return _ensure_state().devices


def _use_compiled(t: torch.Tensor) -> bool:
    return t.device.type in _ensure_state().devices


# --- fake kernels: shapes and dtypes only, for torch.compile and CUDA graph capture ------------------------------


def _draw_fake(logits: torch.Tensor, key0: torch.Tensor, key1: torch.Tensor, temperature: float, forbid_a: int,
               forbid_b: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = logits.shape[0]
    return logits.new_empty((n,), dtype=torch.int64), logits.new_empty((n,), dtype=torch.float64)


def _rms_norm_fake(x: torch.Tensor, weight: torch.Tensor, eps: float,
                   residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    return x.new_empty(x.shape), (x.new_empty(x.shape) if residual is not None else None)


def _uniforms_fake(key0: torch.Tensor, key1: torch.Tensor, width: int) -> torch.Tensor:
    return key0.new_empty((key0.shape[0], width), dtype=torch.float64)


def _register_fakes() -> None:
    """Register the fake kernels once the library defined the ops (registering needs the op to exist)."""
    global _fakes_registered
    if _fakes_registered:
        return
    torch.library.register_fake("diffusionlm::draw")(_draw_fake)
    torch.library.register_fake("diffusionlm::rms_norm")(_rms_norm_fake)
    torch.library.register_fake("diffusionlm::uniforms")(_uniforms_fake)
    _fakes_registered = True


# --- the ops -----------------------------------------------------------------------------------------------------


def draw(logits: torch.Tensor, key0: torch.Tensor, key1: torch.Tensor, temperature: float, forbid_a: int,
         forbid_b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens int64 [...], confidence float64 [...]) from logits [..., V] (any float dtype) and a row's two
    token-stream keys (int64 in [0, 2^32), broadcastable to [...]). The token is argmax(logits / T + Gumbel
    noise) with the noise from the counter-based uniforms (plain argmax at T = 0), never forbid_a or forbid_b
    (ids outside [0, V) forbid nothing), ties to the lowest index; the confidence is softmax(logits)[token] of
    the untempered logits with the forbidden ids at -inf. Compiled kernel when loaded for the device, else
    `draw_reference` (which differs on NaN logits only: the kernels never choose one, torch's argmax does)."""
    if not _use_compiled(logits):
        return draw_reference(logits, key0, key1, temperature, forbid_a, forbid_b)
    shape, vocab = logits.shape[:-1], logits.shape[-1]
    k0, k1 = (k.expand(shape).reshape(-1) for k in (key0, key1))
    tokens, confidence = torch.ops.diffusionlm.draw(logits.reshape(-1, vocab), k0, k1, float(temperature),
                                                    int(forbid_a), int(forbid_b))
    return tokens.view(shape), confidence.view(shape)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out, new_residual) for inference: h = x + residual (rounded to x's dtype, returned as new_residual; None
    without a residual) or h = x, and out = h * rsqrt(mean(h^2) + eps) * weight over the last dimension,
    accumulated in float32 (float64 for float64 x), in x's dtype. weight: [D], x's dtype or float32. Compiled
    kernel when loaded for the device, else `rms_norm_reference`."""
    if not _use_compiled(x):
        return rms_norm_reference(x, weight, eps, residual)
    return torch.ops.diffusionlm.rms_norm(x, weight, float(eps), residual)


# --- PyTorch fallbacks (and the definitions the compiled kernels are tested against) -----------------------------


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """(h * c) mod 2^32 for int64 h in [0, 2^32), exactly: c in 16-bit halves keeps every product below 2^48."""
    low = h * (c & 0xFFFF)
    high = (h * (c >> 16)).bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    return low.add_(high).bitwise_and_(_M32)


def _lowbias32(h: torch.Tensor) -> torch.Tensor:
    """lowbias32 of int64 values in [0, 2^32) (a new tensor)."""
    h = h ^ (h >> 16)
    h = _mul32(h, _C1)
    h ^= h >> 15
    h = _mul32(h, _C2)
    return h ^ (h >> 16)


def uniforms_reference(key0: torch.Tensor, key1: torch.Tensor, width: int) -> torch.Tensor:
    """float64 uniforms [..., width] of keys [...]: for index v, w_i = lowbias32(key_i ^ lowbias32(v ^ salt_i)),
    k = (w0 >> 6) << 26 | (w1 >> 6), u = (k + 1/2) 2^-52 (streams.py's `RowStreams.from_bases`)."""
    v = torch.arange(width, dtype=torch.int64, device=key0.device)
    w0, w1 = (_lowbias32(key[..., None].to(torch.int64) ^ _lowbias32(v ^ salt))
              for key, salt in zip((key0, key1), _VOCAB_SALT))
    k = ((w0 >> 6) << 26) | (w1 >> 6)
    return (k.to(torch.float64) + 0.5) * 2.0**-52


def draw_reference(logits: torch.Tensor, key0: torch.Tensor, key1: torch.Tensor, temperature: float,
                   forbid_a: int, forbid_b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`draw` in PyTorch, all in float64 ([..., V] buffers). The Gumbel noise is -log(-log(u)) added to
    logits / T (a division, rounded as the other paths round it); argmax returns the first maximum."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    vocab = logits.shape[-1]
    v = torch.arange(vocab, device=logits.device)
    full = logits.to(torch.float64).masked_fill((v == forbid_a) | (v == forbid_b), float("-inf"))
    if temperature == 0:
        tokens = full.argmax(-1)
    else:
        shape = logits.shape[:-1]
        u = uniforms_reference(key0.expand(shape), key1.expand(shape), vocab)
        noise = u.log().neg_().log_().neg_()
        tokens = noise.add_(full / temperature).argmax(-1)
    return tokens, full.softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float,
                       residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`rms_norm` in PyTorch: the same roundings (h rounded to x's dtype before it is normalised)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    new_residual = None
    if residual is not None:
        x = new_residual = (x.to(acc) + residual.to(acc)).to(x.dtype)
    h = x.to(acc)
    out = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + eps) * weight.to(acc)
    return out.to(x.dtype), new_residual


if _ops_defined():  # the library was loaded before this module (torch imports it for the fakes it names)
    _register_fakes()

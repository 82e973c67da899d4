"""Make a deploy bundle from a trained model: check the request, write every artifact into a temporary directory
beside the output, check each artifact against the eager fp32 model, and only then move the directory into place.

A bundle either exists whole, with a manifest whose figures were measured on its own files, or not at all: bad
input is refused before anything is written (`ExportError`), and a failed check (`ParityError`) or any other error
removes the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from config import ConfigError, config_to_toml
from config.schema import Config, ExportConfig
from diffusionlm.export.bundle_manifest import TRTEXEC, model_summary, versions, write_manifest
from diffusionlm.export.denoiser import Denoiser, sample_inputs
from diffusionlm.export.parity import Comparison, ParityError, agrees, compare, within_tolerance
from diffusionlm.export.programs import (
    INSTALL_HINT,
    ONNX,
    PROGRAM,
    describe_onnx,
    max_opset,
    missing_dependencies,
    run_onnx,
    run_program,
    save_program,
    trace,
    write_onnx,
)
from diffusionlm.export.source import describe_source
from diffusionlm.export.weights import WEIGHTS, load_weights, non_finite_weights, save_fp16
from diffusionlm.inference import ModelLoadError, load_model
from diffusionlm.ops import PYTORCH


class ExportError(ValueError):
    """A request that cannot be exported; the message starts with the setting at fault."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]


def _check_output(output: Path, checkpoint: Path, force: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ExportError(f"export.output: {output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise ExportError(f"export.output: {output} exists and is not empty (--force replaces it)")
    # Replacing the output must never delete the model being exported.
    if checkpoint.exists() and checkpoint.resolve().is_relative_to(output.resolve()):
        raise ExportError(f"export.output: {output} holds the checkpoint {checkpoint}; write the bundle elsewhere")


def _load(settings: ExportConfig) -> tuple[nn.Module, Config, Path]:
    """The fp32 model on the CPU with PyTorch ops only, so that no Triton or FlashAttention op enters a graph."""
    try:
        return load_model(settings.checkpoint, "cpu", PYTORCH)
    except (ModelLoadError, ConfigError, ValueError, OSError) as e:
        raise ExportError(f"export.checkpoint: {e}") from None


def check_request(settings: ExportConfig, force: bool = False) -> None:
    """Refuse what needs no model to refuse: missing settings or packages, an output in the way, an opset too new."""
    if settings.checkpoint is None:
        raise ExportError("export.checkpoint: no model given (pass --checkpoint PATH)")
    if settings.output is None:
        raise ExportError("export.output: no bundle directory given (pass --output DIR)")
    _check_output(Path(settings.output), Path(settings.checkpoint), force)
    missing = missing_dependencies()
    if missing:
        raise ExportError(f"exporting needs {', '.join(missing)}, not installed here: {INSTALL_HINT}")
    if settings.opset > (newest := max_opset()):
        raise ExportError(f"export.opset: {settings.opset} is newer than the installed onnx knows ({newest})")


def export_bundle(settings: ExportConfig, force: bool = False) -> Bundle:
    """Write the bundle `settings.output` for the model at `settings.checkpoint`; see the module docstring."""
    check_request(settings, force)
    model, run_cfg, tokenizer = _load(settings)
    context = run_cfg.model.context_length
    if settings.length > context:
        raise ExportError(f"export.length ({settings.length}) exceeds the model's context_length ({context})")
    source = describe_source(Path(settings.checkpoint))
    output = Path(settings.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        content = _write_artifacts(tmp, model, run_cfg, tokenizer, settings)
        manifest = write_manifest(tmp, {"target": settings.target, "created_by": versions(), "source": source,
                                        **content})
        _publish(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle(output, manifest)


def _publish(tmp: Path, output: Path) -> None:
    """Move the finished bundle into place; an existing (empty or --force) output is moved aside first so that
    the output path never holds a mix of two bundles."""
    # mkdtemp made the directory private and safetensors writes its file 0600; a bundle is meant to be copied
    # and served, so it gets the modes of any file this process creates.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    for f in tmp.iterdir():
        f.chmod(0o666 & ~umask)
    if not output.exists():
        tmp.rename(output)
        return
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    output.rename(old)
    tmp.rename(output)
    shutil.rmtree(old, ignore_errors=True)


def _failure(name: str, c: Comparison, limit: str) -> str:
    return (f"{name}: max abs diff {c.max_abs_diff:.3g}, argmax agreement {c.argmax_agreement:.3f}, finite "
            f"{'ok' if c.finite_ok else 'NOT ok'}, <mask> logit {c.masked_logit} ({limit})")


def _refuse(failures: list[str]) -> None:
    if failures:
        raise ParityError("parity check failed, no bundle written:\n  " + "\n  ".join(failures))


def _write_artifacts(tmp: Path, model: nn.Module, run_cfg: Config, tokenizer: Path, settings: ExportConfig,
                     ) -> dict[str, Any]:
    """Write weights, config, tokenizer, the program and ONNX into `tmp`, checking each; the manifest's content."""
    m = run_cfg.model
    save_fp16(model, tmp / WEIGHTS)
    (tmp / "config.toml").write_text(config_to_toml(run_cfg))
    shutil.copyfile(tokenizer, tmp / "tokenizer.json")

    inputs = sample_inputs(m, settings.batch, settings.length, settings.seed)
    denoiser = Denoiser(model).eval()
    with torch.no_grad():
        reference = denoiser(*inputs.values())

    # fp16 first: it is cheap, and a model that breaks in fp16 need not be traced at all. Checked on the written
    # file, upcast (what a consumer of model.safetensors computes in fp32) and as is (what an fp16 engine does).
    fresh = load_weights(m, tmp / WEIGHTS)
    overflow = non_finite_weights(fresh)
    with torch.no_grad():
        fp16_weights = compare(reference, Denoiser(fresh)(*inputs.values()))
        fp16_compute = compare(reference, Denoiser(fresh.half())(*inputs.values()))
    gate_compute = settings.target == "jetson"
    limit16 = f"needs argmax agreement >= {settings.fp16_min_agreement}"
    failures = [_failure("fp16 weights", fp16_weights, limit16)] if not agrees(
        fp16_weights, settings.fp16_min_agreement) else []
    if gate_compute and not agrees(fp16_compute, settings.fp16_min_agreement):
        failures.append(_failure("fp16 compute (the TensorRT --fp16 engine's precision)", fp16_compute, limit16))
    if overflow:
        failures.append(f"weights beyond fp16's range (inf after the cast): {', '.join(overflow)}")
    _refuse(failures)

    program = trace(denoiser, inputs)
    save_program(program, tmp / PROGRAM)
    exported = compare(reference, run_program(tmp / PROGRAM, inputs))
    limit32 = f"needs max abs diff <= {settings.fp32_tolerance:g} and -inf kept"
    _refuse([] if within_tolerance(exported, settings.fp32_tolerance) else
            [_failure("torch.export program", exported, limit32)])
    write_onnx(program, inputs, tmp / ONNX, settings.opset)
    onnxruntime = compare(reference, run_onnx(tmp / ONNX, inputs))
    _refuse([] if within_tolerance(onnxruntime, settings.fp32_tolerance) else
            [_failure("onnxruntime (CPUExecutionProvider)", onnxruntime, limit32)])

    B, T, V = settings.batch, settings.length, m.vocab_size
    io_inputs = [{"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
                 for name, t in inputs.items()]
    return {
        "model": model_summary(model, run_cfg),
        "batch": B,
        "length": T,
        "inputs": io_inputs,
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [B, T, V],
                     "note": f"the <mask> logit (index {m.mask_token_id}) is -inf"}],
        "artifacts": {
            WEIGHTS: {"dtype": "float16", "what": "weights; a tied embedding/head is stored once"},
            PROGRAM: {"dtype": "float32", "what": "torch.export program of Denoiser, static shapes",
                      "load": "torch.export.load(path).module()"},
            ONNX: {"dtype": "float32", "what": "ONNX of the same trace, static shapes",
                   "exporter": "torch.onnx.export(dynamo=True)", **describe_onnx(tmp / ONNX)},
            "config.toml": {"what": "the run's config"},
            "tokenizer.json": {"what": "the run's tokenizer"},
        },
        "tensorrt": {"build": TRTEXEC, "engine_dtype": "float16"},
        "parity": {
            "input": {"seed": settings.seed, "positions": B * T,
                      "masked_positions": int((inputs["input_ids"] == m.mask_token_id).sum())},
            "limits": {"fp32_max_abs_diff": settings.fp32_tolerance,
                       "fp16_min_argmax_agreement": settings.fp16_min_agreement},
            "torch_export": exported.record(),
            "onnxruntime": onnxruntime.record(),
            "fp16_weights": fp16_weights.record(),
            "fp16_compute": {**fp16_compute.record(), "gated": gate_compute},
        },
    }

"""The two graphs of a bundle: a `torch.export` program (`denoiser.pt2`) and ONNX (`denoiser.onnx`), and how each is
run to check it.

Both come from one `torch.export.export` trace of the fp32 `Denoiser` on the CPU under the PyTorch kernel policy,
so no Triton or FlashAttention custom op can enter either graph. ONNX is written by torch's dynamo exporter
(`torch.onnx.export(exported_program, dynamo=True)`, which needs onnxscript), translating that same trace. The
TorchScript exporter is not a fallback: in torch 2.13 it has no translation for `aten::rms_norm` at any opset, and
the family normalises with it. The dynamo exporter's conversion down to opset 17 fails on this graph's ReduceMean,
so bundles are opset 18 or later. onnx, onnxscript and onnxruntime are imported only here, when a bundle is made
or checked (the `export` extra).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

PROGRAM = "denoiser.pt2"
ONNX = "denoiser.onnx"
OUTPUT_NAME = "logits"
DEPENDENCIES = ("onnx", "onnxscript", "onnxruntime")
INSTALL_HINT = "pip install -e '.[export]'"


def missing_dependencies() -> list[str]:
    """The packages of the `export` extra that cannot be imported."""
    missing = []
    for name in DEPENDENCIES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def max_opset() -> int:
    """The newest opset the installed onnx package knows."""
    import onnx

    return int(onnx.defs.onnx_opset_version())


def trace(denoiser: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.export.ExportedProgram:
    """One static-shape trace of `denoiser` (eval mode) on `inputs`, in the order of `inputs`."""
    return torch.export.export(denoiser.eval(), tuple(inputs.values()))


def save_program(program: torch.export.ExportedProgram, path: Path) -> None:
    torch.export.save(program, str(path))


def run_program(path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of the saved program at `path`, loaded afresh so that what is checked is what was written."""
    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        return module(*inputs.values())


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter logs one warning per torchvision op it cannot register (torchvision is not a dependency) and
    # a deprecation from its own pytree use; neither concerns the graph it writes.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def write_onnx(program: torch.export.ExportedProgram, inputs: dict[str, torch.Tensor], path: Path,
               opset: int) -> None:
    """ONNX of `program` with named inputs and no dynamic axes. Weights go into the file, or beside it as
    `<name>.data` once they pass protobuf's 2 GB limit (TensorRT's parser reads either from the same folder)."""
    with _quiet_exporter():
        onnx_program = torch.onnx.export(program, tuple(inputs.values()), dynamo=True, opset_version=opset,
                                         input_names=list(inputs), output_names=[OUTPUT_NAME], verbose=False)
    if onnx_program is None:  # only the TorchScript path returns None
        raise RuntimeError("torch.onnx.export returned no program")
    onnx_program.save(str(path))


def describe_onnx(path: Path) -> dict[str, Any]:
    """What a TensorRT build depends on: the opset written, the operator types, the inputs and outputs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)

    def io(values: Any) -> list[dict[str, Any]]:
        return [{"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                 "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param
                           for d in v.type.tensor_type.shape.dim]} for v in values]

    return {"opset": opset, "ops": sorted({n.op_type for n in model.graph.node}),
            "inputs": io(model.graph.input), "outputs": io(model.graph.output)}


def run_onnx(path: Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """Logits of the ONNX file at `path` through onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {name: t.numpy() for name, t in inputs.items()})[0]

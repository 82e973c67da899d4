"""Edge deploy bundles: one trained model at one static shape, in the forms edge runtimes load, checked against
the eager fp32 model when written.

A bundle directory holds `model.safetensors` (fp16 weights), `config.toml`, `tokenizer.json`, `denoiser.pt2` (a
`torch.export` program), `denoiser.onnx` (fp32 ONNX, for onnxruntime or a TensorRT fp16 engine) and
`manifest.json` (shapes, dtypes, versions, parity figures, every file's sha256). `export_bundle` writes one,
`verify_bundle` checks a copy of one. Made for `diffusionlm-export` (docs/export.md).
"""

from diffusionlm.export.bundle import Bundle, ExportError, check_request, export_bundle
from diffusionlm.export.bundle_manifest import FORMAT, TRTEXEC, verify_bundle
from diffusionlm.export.denoiser import Denoiser, sample_inputs, time_conditioned
from diffusionlm.export.parity import Comparison, ParityError, compare
from diffusionlm.export.programs import INSTALL_HINT, ONNX, PROGRAM, missing_dependencies, run_onnx, run_program
from diffusionlm.export.weights import WEIGHTS, load_weights

__all__ = [
    "FORMAT",
    "INSTALL_HINT",
    "ONNX",
    "PROGRAM",
    "TRTEXEC",
    "WEIGHTS",
    "Bundle",
    "Comparison",
    "Denoiser",
    "ExportError",
    "ParityError",
    "check_request",
    "compare",
    "export_bundle",
    "load_weights",
    "missing_dependencies",
    "run_onnx",
    "run_program",
    "sample_inputs",
    "time_conditioned",
    "verify_bundle",
]

"""diffusionlm-bench-infer: latency and throughput of sampling by iterative unmasking.

For a trained model (`--checkpoint`, a run dir, checkpoint dir or final/ export) or a freshly initialised named
size or benchmark preset (`--size`, `--preset`; speed only: the FLOPs do not depend on the weights), generates
`--gen-len` tokens for every combination of `--batch-sizes` and `--steps` with the same `generate()` that
`diffusionlm-infer` uses, and reports per-sample latency (median and p90 over `--reps` timed runs after
`--warmup` untimed ones), generated tokens/s, time per denoising step and peak memory. `--bundle DIR` benchmarks an
export bundle (`diffusionlm-export`): verified first, its fp16 weights loaded into the family its config.toml
describes. Before any model is loaded, each setting's memory is estimated and a setting over `--memory-budget-gb`
is refused (exit 2). `--estimate-device NAME` adds that device's floor per step and tokens/s ceiling, from
the model and benchmarking/common.py's datasheet figures. Every run must leave no
`<mask>` behind (checked). `--reference FILE` adds the matching lines of `python3 -m benchmarking.reference
--preset NAME --sample` (same batch, steps and length; NAME from --label or --preset) and the ratios.

GPU: diffusionlm-bench-infer --preset small --gen-len 256 --batch-sizes 1,32 --steps 64,256 --compile \\
         --reference ref_sample.jsonl --save
Jetson: diffusionlm-bench-infer --bundle bundles/tiny --config config/resources/bench_infer_jetson.toml \\
         --batch-sizes 1 --gen-len 64,128 --steps 10,25,50 --estimate-device jetson-orin-nano-8gb
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from benchmarking.common import (
    default_result_path,
    device_name,
    git_commit,
    int_list,
    peak_bandwidth,
    peak_flops,
    reference_records,
    summarize,
    write_result,
)
from benchmarking.preset import preset_path
from config import add_config_arguments, config_from_args
from config.schema import MODEL_SIZES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffusionlm-bench-infer", description=__doc__.split("\n\n")[0])
    add_config_arguments(p, "train.toml")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="a trained model: run dir, checkpoint dir or final/ export")
    src.add_argument("--size", choices=list(MODEL_SIZES), help="a freshly initialised model of this size (speed only)")
    src.add_argument("--preset", help="a freshly initialised model of benchmarking/presets/PRESET.toml (speed only)")
    src.add_argument("--bundle", help="an export bundle directory (diffusionlm-export): its fp16 weights and config")
    p.add_argument("--vocab-size", type=int, help="with --size: model.vocab_size")
    p.add_argument("--context-length", type=int, help="with --size: model.context_length")
    p.add_argument("--gen-len", type=int_list, default=[256],
                   help="tokens generated per sample (no prompt), comma-separated, e.g. 64,128")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 32], help="comma-separated, e.g. 1,32")
    p.add_argument("--steps", type=int_list, default=[64, 256], help="denoising steps, comma-separated")
    p.add_argument("--strategy", choices=["ancestral", "low_confidence", "random", "threshold"],
                   default="low_confidence", help="the sampler's strategy (threshold: steps is an upper bound)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="weights and activations (default: the config's inference.precision; auto: bf16 on CUDA, "
                        "fp32 elsewhere)")
    p.add_argument("--threshold", type=float, default=0.9, help="the threshold strategy's confidence threshold")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (one graph per batch shape)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay the denoising loop from CUDA graphs (GraphedSampler; CUDA only)")
    p.add_argument("--device", default="auto")
    p.add_argument("--reps", type=int, default=5, help="timed generations per configuration")
    p.add_argument("--warmup", type=int, default=1, help="untimed generations first (compilation, allocator)")
    p.add_argument("--label", help="this model's name in --reference (the reference's --preset; default: --preset)")
    p.add_argument("--reference", metavar="FILE",
                   help="JSON lines of `python3 -m benchmarking.reference --sample` from the same job")
    p.add_argument("--memory-budget-gb", type=float, default=None,
                   help="refuse settings whose estimated memory exceeds this many GiB (default: --estimate-device's "
                        "usable memory, else this device's total)")
    p.add_argument("--estimate-device", metavar="NAME",
                   help="add that device's per-step floor and tokens/s ceiling (benchmarking/common.py), e.g. "
                        "jetson-orin-nano-8gb")
    p.add_argument("--output", metavar="PATH", help="append the record to this results JSON document")
    p.add_argument("--save", action="store_true",
                   help="append to benchmarking/results/bench_infer_<device>_<date>.json")
    return p


def load_reference(path: str, label: str) -> list[dict[str, Any]]:
    """The reference's `sample` records for config `label`, one per setting (a repeated setting: the last wins)."""
    by_setting = {(r["batch"], r["steps"], r["gen_len"]): r for r in reference_records(path, "sample", label)}
    return list(by_setting.values())


def bundle_model_config(path: str) -> Any:
    """The model config of the bundle at `path`, after checking every file against its manifest (exit 2 if not)."""
    from pathlib import Path

    from config import ConfigError, load_config
    from diffusionlm.export import verify_bundle

    problems = verify_bundle(Path(path))
    if problems:
        raise SystemExit(f"error: --bundle {path}: " + "; ".join(problems))
    try:
        return load_config(Path(path) / "config.toml", environ={}).model
    except ConfigError as e:
        raise SystemExit(f"error: --bundle {path}: config.toml: {e}") from None


def load_bundle(path: str, model_cfg: Any, kernels: Any, device: Any) -> Any:
    """The bundle's fp16 weights in a fresh model of its family (built with the bench's kernel policy)."""
    from pathlib import Path

    from safetensors.torch import load_model as load_safetensors

    from diffusionlm.export import WEIGHTS
    from diffusionlm.models import build_model as build_family

    model = build_family(model_cfg, kernels)
    load_safetensors(model, str(Path(path) / WEIGHTS))
    return model.to(device).eval()


def build_model(args: argparse.Namespace, cfg: Any, device: Any,
                bundle_cfg: Any = None) -> tuple[Any, Any, str, Any]:
    """(model in eval mode on its device, model config, where it came from, its kernel policy)."""

    import torch

    from diffusionlm.inference import ModelLoadError, load_model
    from diffusionlm.models import build_model as build_family
    from diffusionlm.ops import resolve_kernels

    try:
        kernels = resolve_kernels(cfg.kernels, device)
        if args.bundle:
            return load_bundle(args.bundle, bundle_cfg, kernels, device), bundle_cfg, f"bundle {args.bundle}", kernels
        if args.checkpoint:
            model, run_cfg, _ = load_model(args.checkpoint, device, kernels)
            return model, run_cfg.model, str(args.checkpoint), kernels
    except (ModelLoadError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    torch.manual_seed(cfg.training.seed)
    model = build_family(cfg.model, kernels).to(device).eval()
    origin = f"random init, preset {args.preset}" if args.preset else f"random init, size {cfg.model.size}"
    return model, cfg.model, origin, kernels


def time_generation(model: Any, model_cfg: Any, batch: int, steps: int, gen_len: int, args: argparse.Namespace,
                    device: Any, kernels: Any) -> dict[str, Any]:
    import torch

    from diffusionlm.inference import GraphedSampler, SamplerSettings, generate

    cuda = device.type == "cuda"
    template = [model_cfg.mask_token_id] * gen_len
    settings = SamplerSettings(strategy=args.strategy, steps=steps, seed=0, threshold=args.threshold)
    graphed = GraphedSampler(model, model_cfg, settings, kernels=kernels) if args.cuda_graphs else None

    def run() -> Any:
        if graphed is not None:
            return graphed.generate(template, batch_size=batch)
        return generate(model, model_cfg, template, settings, batch_size=batch, kernels=kernels)

    for _ in range(args.warmup):
        run()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    latencies = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        out = run()
        if cuda:
            torch.cuda.synchronize(device)
        latencies.append(time.perf_counter() - t0)
        if bool((out.ids == model_cfg.mask_token_id).any()):
            raise RuntimeError(f"generation left <mask> tokens (batch {batch}, steps {steps})")
    lat = summarize(latencies)
    return {
        "batch": batch, "steps": steps, "gen_len": gen_len,
        "latency_ms": {k: v * 1e3 for k, v in lat.items()},
        "steps_taken": out.steps, "model_calls": out.model_calls,  # of the last run (threshold may stop early)
        "step_ms": lat["median"] * 1e3 / out.steps,
        "tokens_per_s": batch * gen_len / lat["median"],
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }


def step_floor(model: Any, model_cfg: Any, batch: int, length: int, dtype_bytes: int, device: str,
               ) -> dict[str, Any]:
    """The least one model call (denoising step) can cost: it reads every weight once and does the body's matrix
    products for every position plus attention over the whole sequence (the head only for the positions that
    can still change; counted here for all of them, an upper bound). Against the GPU's datasheet peak and
    bandwidth when they are known: the floor is the larger of the two times."""
    params = sum(p.numel() for p in model.parameters())
    body = model.num_params(include_embeddings=False) if hasattr(model, "num_params") else params
    d, n_layers, vocab = model_cfg.d_model, model_cfg.n_layers, model_cfg.vocab_size
    positions = batch * length
    flops = 2.0 * body * positions + 4.0 * n_layers * d * length * positions + 2.0 * d * vocab * positions
    weight_bytes = params * dtype_bytes
    peak, bandwidth = peak_flops(device), peak_bandwidth(device)
    floor = {"weight_bytes": weight_bytes, "flops": flops, "peak_flops": peak, "bandwidth_bytes_per_s": bandwidth,
             "formula": "flops = 2 N_body B L + 4 n_layers d L^2 B + 2 d V B L; bytes = every weight once"}
    if peak is not None and bandwidth is not None:
        compute_ms, memory_ms = flops / peak * 1e3, weight_bytes / bandwidth * 1e3
        floor.update(compute_ms=compute_ms, memory_ms=memory_ms, floor_ms=max(compute_ms, memory_ms),
                     bound="compute" if compute_ms >= memory_ms else "memory")
    return floor


def check_memory(args: argparse.Namespace, model_cfg: Any, device: Any, dtype: Any) -> dict[str, Any] | str:
    """The memory estimate of every (batch, length) for the record, or the refusal message when one does not
    fit the budget."""
    from benchmarking.infer_memory import budget_bytes, count_params, estimate, refusal

    params = count_params(model_cfg)
    budget, source = budget_bytes(device, args.memory_budget_gb, args.estimate_device)
    estimates = [estimate(model_cfg, params, b, n, dtype.itemsize) for n in args.gen_len for b in args.batch_sizes]
    refused = refusal(estimates, budget, source, str(dtype).removeprefix("torch."))
    if refused is not None:
        return refused
    return {"budget_bytes": budget, "budget_source": source, "settings": [e.record() for e in estimates],
            "formula": "weights = params x dtype; activations = B L (7 d + 3 ffn) x 4 + B heads L^2 x 4; "
                       "logits = B L V (dtype + 20)"}


def device_estimate(model: Any, model_cfg: Any, fig: dict[str, Any], dtype_bytes: int, device: str,
                    ) -> dict[str, Any]:
    """What this setting could reach on `device` (datasheet figures): the floor of one step and the tokens/s
    ceiling of the whole generation (steps x that floor)."""
    floor = step_floor(model, model_cfg, fig["batch"], fig["gen_len"], dtype_bytes, device)
    seconds = fig["steps"] * floor["floor_ms"] / 1e3
    return {"device": device, "floor_ms_per_step": floor["floor_ms"], "bound": floor["bound"],
            "weight_bytes_per_step": floor["weight_bytes"], "flops_per_step": floor["flops"],
            "peak_flops": floor["peak_flops"], "bandwidth_bytes_per_s": floor["bandwidth_bytes_per_s"],
            "tokens_per_s_ceiling": fig["batch"] * fig["gen_len"] / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.reps < 1 or args.warmup < 0:
        parser.error("--reps and --gen-len must be >= 1, --warmup >= 0")
    args.label = args.label or args.preset
    if args.reference and not args.label:
        parser.error("--reference needs --label or --preset (the reference's config name, e.g. small)")
    if (args.checkpoint or args.bundle) and (args.vocab_size or args.context_length):
        parser.error("--vocab-size/--context-length set up a fresh model (--size); a checkpoint brings its own")
    if args.estimate_device and peak_flops(args.estimate_device) is None:
        parser.error(f"--estimate-device {args.estimate_device!r} has no datasheet figures in benchmarking/common.py")
    if args.memory_budget_gb is not None and args.memory_budget_gb <= 0:
        parser.error("--memory-budget-gb must be > 0")
    if args.preset:
        try:
            args.config = str(preset_path(args.preset))
        except ValueError as e:
            parser.error(str(e))
    sized = [] if args.preset and not args.size else [f"model.size={args.size or 'tiny'}"]
    args.overrides = list(args.overrides) + sized + [
        f"{key}={value}" for key, value in (("model.vocab_size", args.vocab_size),
                                            ("tokenizer.vocab_size", args.vocab_size),
                                            ("model.context_length", args.context_length),
                                            ) if value]
    ref = load_reference(args.reference, args.label) if args.reference else None
    cfg = config_from_args(args, "train.toml")
    args.precision = args.precision or cfg.inference.precision
    import torch

    from diffusionlm.device import select_device
    from diffusionlm.inference import inference_dtype

    device = select_device(args.device)
    dtype = inference_dtype(args.precision, device)
    # Before loading: the model's shape (a bundle's config, a fresh model's) and the memory each setting needs.
    planned_cfg = bundle_model_config(args.bundle) if args.bundle else None if args.checkpoint else cfg.model
    memory = None
    if planned_cfg is not None:
        if max(args.gen_len) > planned_cfg.context_length:
            print(f"error: --gen-len {max(args.gen_len)} exceeds the model's context_length "
                  f"{planned_cfg.context_length}", file=sys.stderr)
            return 2
        memory = check_memory(args, planned_cfg, device, dtype)
        if isinstance(memory, str):
            print(memory, file=sys.stderr)
            return 2
    model, model_cfg, origin, kernels = build_model(args, cfg, device, planned_cfg)
    if max(args.gen_len) > model_cfg.context_length:
        print(f"error: --gen-len {max(args.gen_len)} exceeds the model's context_length {model_cfg.context_length}",
              file=sys.stderr)
        return 2
    model.to(dtype)
    if args.compile:
        model = torch.compile(model)
    if args.cuda_graphs and device.type != "cuda":
        print("error: --cuda-graphs needs a CUDA device", file=sys.stderr)
        return 2
    figures = [time_generation(model, model_cfg, b, s, n, args, device, kernels)
               for n in args.gen_len for b in args.batch_sizes for s in args.steps]
    for fig in figures:  # how far each step is from what the hardware allows
        fig["floor_per_step"] = step_floor(model, model_cfg, fig["batch"], fig["gen_len"], dtype.itemsize,
                                           device_name(device))
        if "floor_ms" in fig["floor_per_step"]:
            fig["step_vs_floor"] = fig["step_ms"] / fig["floor_per_step"]["floor_ms"]
        if args.estimate_device:
            fig["estimate"] = device_estimate(model, model_cfg, fig, dtype.itemsize, args.estimate_device)
    if ref is not None:
        by_key = {(r["batch"], r["steps"], r["gen_len"]): r for r in ref}
        for fig in figures:
            match = by_key.get((fig["batch"], fig["steps"], fig["gen_len"]))
            if match is not None:
                fig["reference"] = match
                fig["ratio_tokens_per_s"] = fig["tokens_per_s"] / match["tokens_per_s"]
    name = device_name(device)
    record = {
        "bench": "infer", "device": name, "commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__, "command": "diffusionlm-bench-infer " + " ".join(argv or sys.argv[1:]),
        "config": {"model": origin, "d_model": model_cfg.d_model, "n_layers": model_cfg.n_layers,
                   "vocab_size": model_cfg.vocab_size, "context_length": model_cfg.context_length,
                   "params": sum(p.numel() for p in model.parameters()), "dtype": str(dtype).removeprefix("torch."),
                   "compile": args.compile, "cuda_graphs": args.cuda_graphs,
                   "strategy": args.strategy, "threshold": args.threshold if args.strategy == "threshold" else None,
                   "reps": args.reps, "warmup": args.warmup},
        "kernels": kernels.record(),
        "timer": "perf_counter around generate(), CUDA synchronized" if device.type == "cuda" else "perf_counter",
        "figures": figures,
    }
    if memory is not None:
        record["memory_estimate"] = memory
    if args.label:
        record["label"] = args.label
    print(json.dumps(record, indent=2))
    for path in ([args.output] if args.output else []) + ([default_result_path("bench_infer", name)]
                                                          if args.save else []):
        write_result(record, path, "bench_infer", name)
        print(f"appended to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

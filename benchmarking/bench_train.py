"""diffusionlm-bench-train: throughput of the platform's real training step.

Builds a `Trainer` from the config (no logging, no validation, no samples, a temporary run directory),
then times `Trainer.step()` (data fetch, forward, backward, clipping, optimizer) after a warm-up that
absorbs compilation. `--preset NAME` starts from benchmarking/presets/NAME.toml. Step times come from
CUDA events on a GPU, from perf_counter on a CPU.
Prints one JSON document: tokens/s, step time (median, p90), MFU with its formula and peak, peak memory,
data-wait fraction. `--reference` adds the plain-PyTorch reference's figure from the same job and ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarking.common import (
    GcPauses,
    default_result_path,
    device_name,
    git_commit,
    peak_flops,
    reference_records,
    summarize,
    write_result,
)
from benchmarking.gpu_telemetry import GpuTelemetry, smi_id
from benchmarking.preset import preset_path
from config import add_config_arguments, config_from_args
from config.schema import MODEL_SIZES

FLOP_FORMULA = (
    "per optimizer step, forward + backward, matrix products only: "
    "6 * N_body * positions + 12 * n_layers * d_model * context_length * positions + 6 * d_model * vocab * head_rows; "
    "N_body = parameters without the token embedding and the output head (blocks, norms, time embedding); "
    "positions = batch * context_length * grad_accum (every position runs through the body); "
    "head_rows = the masked positions actually sent through the head when diffusion.masked_only_logits "
    "(counted per step), else all positions; the attention term counts QK^T and AV over the full "
    "bidirectional T x T (no causal halving)"
)


def step_flops(model_cfg: Any, n_body: int, positions: int, head_rows: int) -> float:
    d, L, T, V = model_cfg.d_model, model_cfg.n_layers, model_cfg.context_length, model_cfg.vocab_size
    return 6.0 * n_body * positions + 12.0 * L * d * T * positions + 6.0 * d * V * head_rows


def build_overrides(args: argparse.Namespace) -> list[str]:
    """Bench flags as config overrides; the user's --set comes after them and wins."""
    out = []
    pairs = [("model.size", args.size and f'"{args.size}"'), ("model.context_length", args.context_length),
             ("model.vocab_size", args.vocab_size), ("data.batch_size", args.batch_size),
             ("training.precision", args.precision and f'"{args.precision}"'),
             ("optimizer.optimizer_name", args.optimizer and f'"{args.optimizer}"')]
    if args.compile is not None:
        pairs.append(("training.compile", str(args.compile).lower()))
    if args.shards is not None:
        shards = Path(args.shards)
        if not (shards / "meta.json").is_file():
            raise SystemExit(f"error: --shards {shards}: no meta.json there (make one with diffusionlm-make-data)")
        pairs += [("data.source", '"shards"'), ("data.shards_dir", json.dumps(str(shards.resolve())))]
    out += [f"{k}={v}" for k, v in pairs if v is not None]
    return out + list(args.overrides)


def load_reference(path: str, label: str) -> dict[str, Any]:
    """The reference's train record for `label`; the last one wins (a re-run replaces an earlier line)."""
    return reference_records(path, "train", label)[-1]


def run_untimed(trainer: Any, steps: int) -> None:
    """Steps after the timed ones, for the profiler's capture window (see --profile-steps)."""
    for _ in range(steps):
        trainer.step()
    trainer.profiler.step(trainer.micro_step)  # closes a window that ends here


def time_steps(trainer: Any, steps: int, warmup: int, on_timed_start: Callable[[], None] | None = None,
               ) -> dict[str, Any]:
    """Run `warmup` untimed and `steps` timed optimizer steps; per-step device (CUDA events) and wall times,
    and the statistics of the timed steps (read after the loop: a deferred step's would sync inside it)."""
    import torch

    cuda = trainer.device.type == "cuda"
    events: list[tuple[Any, Any]] = []
    walls: list[float] = []
    read: list[Any] = []
    first_step_s = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize(trainer.device)
                torch.cuda.reset_peak_memory_stats(trainer.device)
            if on_timed_start is not None:
                on_timed_start()
        if cuda and i >= warmup:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        stats = trainer.step()
        if cuda and i >= warmup:
            end.record()
            events.append((start, end))
        wall = time.perf_counter() - t0
        if i == 0:
            first_step_s = wall
        if i >= warmup:
            walls.append(wall)
            read.append(stats)
    if cuda:
        torch.cuda.synchronize(trainer.device)
        step_s = [a.elapsed_time(b) / 1e3 for a, b in events]
    else:
        step_s = walls
    return {"step_s": step_s, "wall_s": walls, "first_step_s": first_step_s,
            "data_wait_s": [st["metrics.data_wait_s"] for st in read],
            "tokens": [st["metrics.tokens"] for st in read],
            "losses": [st["metrics.loss"] for st in read],
            "masked": sum(st["metrics.num_masked"] for st in read)}


def run_bench(cfg: Any, steps: int, warmup: int, peak: float | None = None, profile_steps: int = 0,
              preset: str | None = None) -> dict[str, Any]:
    """Build the trainer for `cfg`, time it, and return the result record (without reference).

    profile_steps > 0 runs that many more steps after the timed ones inside the profiler's capture window
    (nsys with --capture-range=cudaProfilerApi, and/or profiling.torch_trace), so profiling never skews
    the timed numbers.
    """
    import torch

    from diffusionlm.models.transformer import default_ffn_hidden
    from diffusionlm.ops import training_attention_path, training_mlp_path
    from diffusionlm.training.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        cfg = cfg.model_copy(deep=True)
        accum = cfg.training.grad_accum_steps
        cfg.logging.backend, cfg.logging.output_dir, cfg.logging.run_name = "noop", tmp, "bench"
        cfg.logging.progress_bar = "off"
        cfg.training.skip_validation, cfg.training.num_samples = True, 0
        total = (warmup + steps + profile_steps) * accum
        cfg.training.max_train_iteration = total
        cfg.checkpoint.save_freq_iteration = 10 * total
        if profile_steps > 0 and cfg.profiling.start_step is None:
            window = {"start_step": (warmup + steps) * accum, "stop_step": total}
            cfg.profiling = cfg.profiling.model_copy(update=window)
        trainer = Trainer(cfg)
        trainer.build()
        try:
            with GcPauses() as gc_pauses, GpuTelemetry(smi_id(trainer.device)) as telemetry:
                timed = time_steps(trainer, steps, warmup, on_timed_start=telemetry.mark_start)
            run_untimed(trainer, profile_steps)
        finally:
            trainer.close()
        model, device, kernels = trainer.raw_model, trainer.device, trainer.kernels
        n_body, n_all = model.num_params(include_embeddings=False), model.num_params()
        precision = trainer.precision.name
        trace = str(trainer.profiler.trace_path) if trainer.profiler.trace_path else None
        if trace is not None and cfg.profiling.trace_dir is None:
            trace = None  # it lived in the temporary run directory
    m, d = cfg.model, cfg.data
    positions = d.batch_size * m.context_length * accum
    masked_only = getattr(cfg.objective, "masked_only_logits", False)
    head_rows = int(timed["masked"]) if masked_only else positions * steps
    flops = step_flops(m, n_body, positions * steps, head_rows)
    total_s = sum(timed["step_s"])
    tokens = sum(timed["tokens"])
    name = device_name(device)
    peak = peak if peak is not None else (peak_flops(name) if device.type == "cuda" else None)
    step = summarize(timed["step_s"])
    record: dict[str, Any] = {
        "bench": "train",
        "device": name,
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "config": {
            "size": m.size, "d_model": m.d_model, "n_layers": m.n_layers, "n_heads": m.n_heads,
            "vocab_size": m.vocab_size, "context_length": m.context_length, "batch_size": d.batch_size,
            "grad_accum_steps": accum, "precision": precision, "compile": cfg.training.compile,
            "optimizer": cfg.optimizer.optimizer_name, "data_source": d.source, "preset": preset,
            "family": m.family, "objective": cfg.objective.name,
            "masked_only_logits": masked_only, "time_conditioning": m.time_conditioning,
            "params": n_all, "params_body": n_body, "residual_in_fp32": m.residual_in_fp32,
            "attention": training_attention_path(
                kernels, (d.batch_size, m.context_length, m.n_heads, m.d_model // m.n_heads),
                trainer.precision.dtype or torch.float32),
            "mlp": training_mlp_path(kernels, device, d.batch_size * m.context_length, m.d_model,
                                     m.ffn_hidden or default_ffn_hidden(m.d_model),
                                     trainer.precision.dtype or torch.float32),
        },
        "kernels": kernels.record(),
        "steps": steps,
        "warmup": warmup,
        "tokens_per_s": tokens / total_s,
        "step_ms": {k: v * 1e3 for k, v in step.items()},
        "step_ms_each": [round(s * 1e3, 3) for s in timed["step_s"]],
        "gc_passes": gc_pauses.summary(),  # warmup steps included
        "first_step_s": timed["first_step_s"],
        "mask_fraction": head_rows / (positions * steps),
        "flops_per_step": flops / steps,
        "flop_formula": FLOP_FORMULA,
        "achieved_tflops": flops / total_s / 1e12,
        "peak_flops": peak,
        "peak_source": "dense bf16 datasheet for this GPU (H100/H200 SXM: 989e12)" if peak else None,
        "mfu": flops / total_s / peak if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "data_wait_fraction": sum(timed["data_wait_s"]) / max(sum(timed["wall_s"]), 1e-12),
        "loss_first": timed["losses"][0],
        "loss_last": timed["losses"][-1],
        "timer": "cuda events" if device.type == "cuda" else "perf_counter",
        "gpu_telemetry": telemetry.summary(),  # over the timed steps; None without a GPU or nvidia-smi
    }
    if trace:
        record["trace"] = trace
    return record


def add_reference(record: dict[str, Any], ref: dict[str, Any]) -> None:
    record["reference"] = ref
    ratios: dict[str, float] = {"tokens_per_s": record["tokens_per_s"] / ref["tokens_per_s"]}
    if ref.get("step_ms"):
        ratios["step_time_speedup"] = ref["step_ms"] / record["step_ms"]["median"]
    record["ratios_vs_reference"] = ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusionlm-bench-train", description=__doc__)
    add_config_arguments(parser, "train.toml")
    parser.add_argument("--preset", help="start from benchmarking/presets/PRESET.toml (small, medium, base); "
                        "the flags below and --set apply on top")
    parser.add_argument("--size", choices=list(MODEL_SIZES))
    parser.add_argument("--context-length", type=int)
    parser.add_argument("--batch-size", type=int, help="sequences per micro-step (data.batch_size)")
    parser.add_argument("--vocab-size", type=int, help="model.vocab_size (the tokenizer's may be smaller)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the step (default: the config's training.compile)")
    parser.add_argument("--optimizer", choices=["adamw", "muon"])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--shards", metavar="DIR", help="read pre-tokenized shards (data.source=shards)")
    parser.add_argument("--coordinate-descent-tuning", action="store_true",
                        help="let inductor tune each Triton kernel's block sizes (minutes more compile time; "
                        "measured 8%% faster steps for small on an H100)")
    parser.add_argument("--profile-steps", type=int, default=0, metavar="N",
                        help="after timing, N more steps inside the profiling capture window "
                        "(sets profiling.start_step/stop_step unless given)")
    parser.add_argument("--peak-flops", type=float, help="peak FLOP/s for MFU (default: known GPUs' bf16 peak)")
    parser.add_argument("--label", help="name of this configuration in results and in --reference "
                        "(default: the preset's name)")
    parser.add_argument("--reference", metavar="FILE",
                        help="JSON lines of `python3 -m benchmarking.reference` from the same job; adds ratios for "
                        "--label")
    parser.add_argument("--output", metavar="PATH", help="append the record to this results JSON document")
    parser.add_argument("--save", action="store_true",
                        help="append to benchmarking/results/bench_train_<device>_<date>.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.profile_steps < 0:
        parser.error("--steps must be >= 1, --warmup and --profile-steps >= 0")
    args.label = args.label or args.preset
    if args.reference and not args.label:
        parser.error("--reference needs --label or --preset (the reference's config name, e.g. small)")
    args.overrides = build_overrides(args)
    if args.preset is not None:
        if args.config is not None:
            parser.error("give --preset or --config, not both")
        try:
            args.config = str(preset_path(args.preset))
        except ValueError as e:
            parser.error(str(e))
    cfg = config_from_args(args, "train.toml")
    ref = load_reference(args.reference, args.label) if args.reference else None
    if args.coordinate_descent_tuning:
        import torch._inductor.config as inductor_config

        inductor_config.coordinate_descent_tuning = True

    from diffusionlm.training import TrainingError

    try:
        record = run_bench(cfg, args.steps, args.warmup, args.peak_flops, args.profile_steps, args.preset)
    except (TrainingError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    record["config"]["coordinate_descent_tuning"] = args.coordinate_descent_tuning
    if args.label:
        record["label"] = args.label
    if ref is not None:
        add_reference(record, ref)
    print(json.dumps(record, indent=2))
    for path in ([args.output] if args.output else []) + ([default_result_path("bench_train", record["device"])]
                                                          if args.save else []):
        write_result(record, path, "bench_train", record["device"])
        print(f"appended to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""diffusionlm-bench-ddp: data-parallel weak scaling of the real training step.

One command loops over world sizes itself: for each it starts `torchrun --standalone --nproc-per-node W`
running this module as a worker, which builds the real `Trainer` with a `DDPContext` for every model size
and optimizer-sharding mode, times `Trainer.step()` (the per-GPU batch is fixed, so the global
batch grows with W) and reports tokens/s, per-rank peak memory and optimizer-state bytes. The parent adds
weak-scaling efficiency  tokens/s(W) / (W * tokens/s(1))  and writes
`benchmarking/results/bench_ddp_<device>_<date>.json` with device, git commit and config.

GPU:  diffusionlm-bench-ddp --sizes small,xlarge --world-sizes 1,2,4 [--shards-dir data/shards]
CPU smoke test (gloo): diffusionlm-bench-ddp --device cpu --sizes tiny --world-sizes 1,2 --batch-size 2 \
      --context-length 32 --steps 3 --warmup 1 --set model.d_model=64 --set model.n_layers=2 --set model.n_heads=2 \
      --set model.vocab_size=512 --set tokenizer.vocab_size=512 --set tokenizer.train_docs=200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarking.common import default_result_path, device_name, git_commit, summarize, write_result

SHARD_MODES = {"on": [True], "off": [False], "both": [False, True]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffusionlm-bench-ddp", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="small,xlarge", help="comma-separated model sizes (config MODEL_SIZES)")
    p.add_argument("--world-sizes", default="1,2,4", help="comma-separated process counts, one torchrun each")
    p.add_argument("--shard", choices=sorted(SHARD_MODES), default="both", help="optimizer-state sharding")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per GPU per step (fixed: weak scaling)")
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--optimizer", choices=["adamw", "muon"], default="adamw")
    p.add_argument("--shards-dir", default=None, help="pre-tokenized shards (diffusionlm-make-data); default: "
                   "the built-in corpus tokenized on the fly")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra config override for every measured config (repeatable)")
    p.add_argument("--output", default=None, help="results file (default benchmarking/results/...)")
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)  # set when run as a torchrun worker
    p.add_argument("--run-root", default=None, help=argparse.SUPPRESS)
    return p


def config_overrides(args: argparse.Namespace, size: str, shard: bool, run_root: str) -> list[str]:
    sets = [
        f"model.size={size}", f"model.context_length={args.context_length}", f"model.device={args.device}",
        f"inference.total_length={args.context_length}", f"data.batch_size={args.batch_size}",
        f"optimizer.optimizer_name={args.optimizer}", f"ddp.shard_optimizer_state={str(shard).lower()}",
        "training.skip_validation=true", "training.num_samples=0", "logging.backend=noop",
        "logging.progress_bar=off", f"logging.output_dir={run_root}", f"logging.run_name={size}-shard{int(shard)}",
        "tokenizer.train_docs=2000", "data.num_workers=2",
    ]
    if args.shards_dir:
        sets += ["data.source=shards", f"data.shards_dir={args.shards_dir}"]
    return sets + list(args.overrides)


# ---------------------------------------------------------------- worker (one rank under torchrun)
def measure(args: argparse.Namespace, size: str, shard: bool) -> dict[str, Any] | None:
    """Time one config on this rank; rank 0 returns the record, the others None."""
    import gc

    import torch
    import torch.distributed as dist

    from benchmarking.bench_train import time_steps
    from benchmarking.gpu_telemetry import GpuTelemetry, smi_id
    from config import load_config
    from ddp import DDPContext
    from ddp.sharding import OptimizerStateSharding
    from diffusionlm.training.trainer import Trainer

    cfg = load_config(None, config_overrides(args, size, shard, args.run_root))
    total = (args.warmup + args.steps) * cfg.training.grad_accum_steps
    cfg.training.max_train_iteration, cfg.checkpoint.save_freq_iteration = total, 10 * total
    par = DDPContext(cfg.ddp, cfg.model.device)
    trainer = Trainer(cfg, parallel=par)
    trainer.build()
    try:
        with GpuTelemetry(smi_id(trainer.device)) as telemetry:  # each rank samples its own GPU
            timed = time_steps(trainer, args.steps, args.warmup, on_timed_start=telemetry.mark_start)
    finally:
        trainer.close()
    opt = trainer.optimizer
    local = opt.local_state_bytes() if isinstance(opt, OptimizerStateSharding) else sum(
        v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    cuda = trainer.device.type == "cuda"
    per_rank = {"peak_memory_bytes": torch.cuda.max_memory_allocated(trainer.device) if cuda else None,
                "optimizer_state_bytes": local, "gpu_telemetry": telemetry.summary()}
    gathered: list[Any] = [None] * par.world_size
    dist.all_gather_object(gathered, per_rank)
    n_params = trainer.raw_model.num_params()
    kernels = trainer.kernels.record()
    del trainer, opt
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    if par.rank != 0:
        return None
    step_time = sum(timed["step_s"])
    return {
        "size": size, "world_size": par.world_size, "shard_optimizer_state": shard, "optimizer": args.optimizer,
        "kernels": kernels,
        "params": n_params, "per_gpu_batch": args.batch_size, "context_length": args.context_length,
        "global_batch": args.batch_size * par.world_size, "steps": args.steps,
        "tokens_per_s": sum(timed["tokens"]) / step_time,
        "step_s": summarize(timed["step_s"]),
        "step_ms_each": [round(x * 1e3, 3) for x in timed["step_s"]],  # slow steps: every rank waits for them
        "data_wait_fraction": sum(timed["data_wait_s"]) / max(sum(timed["wall_s"]), 1e-9),
        "peak_memory_bytes_per_rank": [r["peak_memory_bytes"] for r in gathered],
        "optimizer_state_bytes_per_rank": [r["optimizer_state_bytes"] for r in gathered],
        # a rank whose GPU is held back (power, heat) sets every rank's pace: look here for stragglers
        "gpu_telemetry_per_rank": [r["gpu_telemetry"] for r in gathered],
        "final_loss": timed["losses"][-1],
    }


def worker_main(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    records = []
    for size in args.sizes.split(","):
        for shard in SHARD_MODES[args.shard]:
            record = measure(args, size, shard)
            if record is not None:
                records.append(record)
    if dist.get_rank() == 0:
        Path(args.worker_out).write_text(json.dumps(records))
    dist.destroy_process_group()
    return 0


# ---------------------------------------------------------------- parent (loops over world sizes)
def launch(args: argparse.Namespace, argv: list[str], world: int, out: Path, run_root: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world),
           "-m", "benchmarking.bench_ddp", *argv, "--worker-out", str(out), "--run-root", str(run_root)]
    print(f"bench-ddp: {world} process(es): {' '.join(cmd[1:])}", file=sys.stderr)
    # torchrun sets OMP_NUM_THREADS=1 only for nproc > 1; the same for every W keeps the CPU side comparable
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"world size {world} failed with exit code {done.returncode}")
    return json.loads(out.read_text())


def with_efficiency(records: list[dict]) -> list[dict]:
    base = {(r["size"], r["shard_optimizer_state"]): r["tokens_per_s"] for r in records if r["world_size"] == 1}
    for r in records:
        one = base.get((r["size"], r["shard_optimizer_state"]))
        r["weak_scaling_efficiency"] = r["tokens_per_s"] / (r["world_size"] * one) if one else None
    return records


def parse_world_sizes(text: str) -> list[int]:
    """"1,2,4" -> [1, 2, 4]; anything else (a non-integer, a count below 1, an empty entry) is a ValueError."""
    try:
        worlds = [int(w) for w in text.split(",")]
    except ValueError:
        worlds = []
    if not worlds or min(worlds) < 1:
        raise ValueError(f"--world-sizes {text!r}: expected comma-separated process counts of at least 1, "
                         "e.g. 1,2,4")
    return worlds


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker_out:
        return worker_main(args)
    try:  # kept a string in args, so result records keep the command's spelling in their config
        worlds = parse_world_sizes(args.world_sizes)
    except ValueError as e:
        parser.error(str(e))
    import torch

    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    if on_gpu and max(worlds) > torch.cuda.device_count():
        print(f"error: --world-sizes {args.world_sizes} needs {max(worlds)} GPUs, {torch.cuda.device_count()} "
              "visible", file=sys.stderr)
        return 2
    if args.shards_dir and not Path(args.shards_dir).is_dir():
        print(f"error: --shards-dir {args.shards_dir} is not a directory", file=sys.stderr)
        return 2
    device = device_name("cuda" if on_gpu else "cpu")
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for world in worlds:
            try:
                records += launch(args, argv, world, Path(tmp) / f"world{world}.json", Path(tmp) / f"runs{world}")
            except RuntimeError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
    result = {
        "device": device, "git_commit": git_commit(), "command": "diffusionlm-bench-ddp " + " ".join(argv),
        "config": {k: v for k, v in vars(args).items() if k not in ("worker_out", "run_root", "output")},
        "figures": with_efficiency(records),
    }
    path = write_result(result, args.output or default_result_path("bench_ddp", device), "bench_ddp", device)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

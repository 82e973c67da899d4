"""Plain-PyTorch quality yardstick: the held-out NELBO a competently written AdamW MDLM reaches in N steps.

`benchmarking/reference.py` answers "how fast should this shape train?"; this module answers "how good should it
be after N steps on the same data?". It trains reference.py's model with reference.py's loss (imported, not
copied) the way a nanoGPT-style script would: windows of T tokens at uniformly random offsets into the train
split's concatenated documents, AdamW (betas 0.9/0.95, decay on 2-D weights only, fused on CUDA), gradient
clipping at 1, bf16 autocast on CUDA, linear warmup then cosine decay to `--min-lr-ratio` of the peak rate.
At each `--eval-at` step it scores the val split with the project's own estimator
(`diffusionlm.evaluation.nelbo.nelbo_per_sequence`, log-linear schedule, eps 1e-3, a fixed generator), so its
figure and the project's `val.nelbo` measure the same quantity and can be compared directly. The project's MDLM
trainer should match or beat this NELBO at equal steps, batch and data; falling behind it points at a bug or a
poor default rather than at the method.

Data is a shards directory written by `diffusionlm-make-data` (its meta.json is checked, and its files
verified, by `diffusionlm.data.shards` before anything is read). Eval windows are the val tokens cut into
consecutive non-overlapping windows of T, the first `--eval-sequences` of them; document boundaries are ignored
in both splits (every document ends in <eos>, so the model still sees them).

Run it on the GPU job that trains the project's model, on the same shards, preset, batch and steps, and compare
its NELBO with the project's `val.nelbo` (or with `diffusionlm-eval` on the checkpoint) at the same steps:

    python3 -m benchmarking.reference_quality --preset small --shards data/shards --steps 2000 \\
        --eval-at 500,1000,2000 > quality_ref.jsonl
    diffusionlm-train --config benchmarking/presets/small.toml --set data.source=shards \\
        --set data.shards_dir=data/shards --set data.batch_size=64 --set training.max_train_iteration=2000 \\
        --set training.val_freq_iteration=500

It prints one JSON line per eval point: {"bench": "quality", "config", "step", "val_nelbo_nats", "val_bits",
"val_ppl_bound", "train_loss" (mean of the last 50 steps), "tokens_seen", "tokens_per_s" (training steps only,
the first, compiling one excluded), "elapsed_s" (since the first step, evaluations included), ...}.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from benchmarking.common import device_name, int_list
from benchmarking.preset import preset_names
from benchmarking.reference import EPS, MASK_ID, DiffusionLM, Shape, mdlm_loss, resolve_shape
from diffusionlm.data.errors import DataError
from diffusionlm.data.shards import read_meta, verify_shards
from diffusionlm.diffusion import get_schedule
from diffusionlm.evaluation.nelbo import nelbo_per_sequence

REF = "benchmarking/reference_quality.py"
EVAL_SEED = 1234  # one fixed generator for every eval point and run: common random numbers across comparisons
LOSS_WINDOW = 50


class NelboAdapter(nn.Module):
    """The call signature `nelbo_per_sequence` expects, around the reference model.

    The reference model is bidirectional and not time-conditioned, so `attention_mask` (windows hold no padding)
    and `t` are ignored; the logits are returned only at the masked positions, as [N, V].
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, xt: torch.Tensor, attention_mask: torch.Tensor | None = None, t: torch.Tensor | None = None,
                output_mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.model(xt)
        return logits if output_mask is None else logits[output_mask]


def split_tokens(shards_dir: Path, meta: dict, split: str) -> np.ndarray:
    """Every token of `split`, its shards back to back (a read-only map when there is only one shard)."""
    dtype = np.dtype(meta["dtype"])
    maps = [np.memmap(shards_dir / s["file"], dtype=dtype, mode="r") for s in meta["splits"][split]["shards"]]
    return maps[0] if len(maps) == 1 else np.concatenate(maps)


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak rate at 0-based `step`: linear warmup, then cosine down to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: nn.Module, windows: torch.Tensor, batch_size: int, k: int, device: torch.device) -> dict:
    """Held-out NELBO of `windows` [S, T] with the project's estimator, as nats, bits and a perplexity bound."""
    was_training = model.training
    model.eval()
    scorer, schedule = NelboAdapter(model), get_schedule("loglinear")
    generator = torch.Generator(device=device).manual_seed(EVAL_SEED)
    nats = tokens = 0.0
    for i in range(0, len(windows), batch_size):
        ids = windows[i : i + batch_size].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            nelbo, real = nelbo_per_sequence(scorer, ids, None, schedule, MASK_ID, k, EPS, generator)
        nats, tokens = nats + nelbo.sum().item(), tokens + real.sum().item()
    model.train(was_training)
    per_token = nats / tokens
    return {"val_nelbo_nats": per_token, "val_bits": per_token / math.log(2), "val_ppl_bound": math.exp(per_token),
            "eval_sequences": len(windows), "eval_tokens": int(tokens)}


def train(args: argparse.Namespace, shape: Shape, train_tokens: np.ndarray, val_windows: torch.Tensor,
          device: torch.device) -> list[dict]:
    """Train for `args.steps` steps, printing (and returning) one record at every `args.eval_at` step."""
    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)  # drives initialization and the loss's masking draws
    model = DiffusionLM(shape.vocab_size, shape.d_model, shape.n_layers, shape.n_heads,
                        shape.context_length).to(device)
    params = sum(p.numel() for p in model.parameters())
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), fused=cuda)
    forward = torch.compile(model) if args.compile else model
    offset_gen = torch.Generator().manual_seed(args.seed)  # on the CPU: the offsets index a host-side array
    positions = np.arange(shape.context_length)
    n_offsets = len(train_tokens) - shape.context_length + 1
    losses: collections.deque[torch.Tensor] = collections.deque(maxlen=LOSS_WINDOW)
    records: list[dict] = []
    eval_at = set(args.eval_at)
    start = time.perf_counter()
    train_s = 0.0
    for step in range(args.steps):
        t0 = time.perf_counter()
        offsets = torch.randint(0, n_offsets, (shape.batch_size,), generator=offset_gen).numpy()
        x0 = torch.from_numpy(train_tokens[offsets[:, None] + positions].astype(np.int64))
        x0 = x0.pin_memory().to(device, non_blocking=True) if cuda else x0
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, args.warmup, args.min_lr_ratio)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = mdlm_loss(forward, x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        if cuda and (step == 0 or step + 1 in eval_at):
            torch.cuda.synchronize(device)  # the clock must not stop before the queued steps have run
        if step:  # the first step compiles and warms the allocator: throughput leaves it out
            train_s += time.perf_counter() - t0
        if step + 1 not in eval_at:
            continue
        tokens_seen = (step + 1) * shape.batch_size * shape.context_length
        timed_tokens = step * shape.batch_size * shape.context_length
        metrics = evaluate(model, val_windows, shape.batch_size, args.eval_k, device)
        records.append({
            "bench": "quality", "ref": REF, "config": args.label, "step": step + 1, **metrics,
            "train_loss": torch.stack(list(losses)).float().mean().item(), "tokens_seen": tokens_seen,
            "tokens_per_s": timed_tokens / train_s if step else None, "elapsed_s": time.perf_counter() - start,
            "device": device_name(device), "compile": args.compile, "params": params,
            "precision": "bf16 autocast" if cuda else "fp32", "shape": dataclasses.asdict(shape),
            "settings": {"lr": args.lr, "wd": args.weight_decay, "warmup": args.warmup,
                         "min_lr_ratio": args.min_lr_ratio, "batch_size": shape.batch_size, "seed": args.seed,
                         "eval_k": args.eval_k, "eval_sequences": args.eval_sequences, "eval_seed": EVAL_SEED,
                         "eps": EPS, "schedule": "loglinear", "windows": "random offsets"},
        })
        print(json.dumps(records[-1]), flush=True)
    return records


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m benchmarking.reference_quality",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help=f"benchmark preset (model shape): {', '.join(preset_names())}")
    p.add_argument("--shards", required=True, metavar="DIR", help="pre-tokenized shards (diffusionlm-make-data)")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    p.add_argument("--eval-at", type=int_list, help="comma-separated steps to evaluate at (default: the last)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per step (and per eval batch)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay of the 2-D weights")
    p.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final rate of the cosine, as a fraction of --lr")
    p.add_argument("--seed", type=int, default=0, help="initialization, window offsets and training masks")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                   help="run the model eagerly (default: the preset's training.compile)")
    p.add_argument("--eval-k", type=int, default=8, help="diffusion times per sequence in the NELBO estimate")
    p.add_argument("--eval-sequences", type=int, default=256, help="val windows of T tokens scored")
    p.add_argument("--label", help="the record's config name (default: the preset's)")
    for flag in ("context-length", "vocab-size", "d-model", "n-layers", "n-heads"):
        p.add_argument(f"--{flag}", type=int, help="override the preset's value")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shape = resolve_shape(args, parser)
    args.label = args.label or args.preset
    args.eval_at = sorted(set(args.eval_at or [args.steps]))
    if args.steps < 1 or args.warmup < 0 or args.eval_k < 1 or args.eval_sequences < 1:
        parser.error("--steps, --eval-k and --eval-sequences must be >= 1, --warmup >= 0")
    if not args.lr > 0 or args.weight_decay < 0 or not 0 <= args.min_lr_ratio <= 1:
        parser.error("--lr must be > 0, --weight-decay >= 0 and --min-lr-ratio in [0, 1]")
    if args.eval_at[-1] > args.steps:
        parser.error(f"--eval-at {args.eval_at[-1]} lies outside [1, --steps {args.steps}]")
    shards = Path(args.shards)
    if not shards.is_dir():
        parser.error(f"--shards {shards}: no such directory (make one with diffusionlm-make-data)")
    try:
        meta = read_meta(shards)
        verify_shards(shards, meta)
    except DataError as e:
        parser.error(f"--shards: {e}")
    if meta["vocab_size"] != shape.vocab_size:
        parser.error(f"--shards {shards} has vocab size {meta['vocab_size']}, the model {shape.vocab_size}: "
                     "pass --vocab-size or use shards made with the preset's tokenizer")
    T = shape.context_length
    for split in ("train", "val"):
        if meta["splits"].get(split, {}).get("tokens", 0) < T:
            parser.error(f"--shards {shards}: the {split} split holds fewer than one window of {T} tokens")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    val = split_tokens(shards, meta, "val")
    n_val = min(args.eval_sequences, len(val) // T)
    val_windows = torch.from_numpy(val[: n_val * T].astype(np.int64)).view(n_val, T)
    train(args, shape, split_tokens(shards, meta, "train"), val_windows, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Plain-PyTorch yardstick for diffusionlm's training and sampling benchmarks.

A masked-diffusion (MDLM) transformer, its training step and a naive sampler, written the way a competent user
would write them without this project (nanoGPT style): a token embedding that includes the mask token, pre-norm
RMSNorm blocks, RoPE, bidirectional `F.scaled_dot_product_attention`, a SwiGLU MLP (hidden = ceil(8d/3/64)*64),
an output head tied to the embedding, AdamW (fused on CUDA) with gradient clipping at 1, bf16 autocast on CUDA,
`torch.compile` of the model unless --no-compile, and a full-vocabulary fp32 cross-entropy at every position.
The loss is MDLM's under the log-linear schedule: antithetic times t in [eps, 1], each position masked with
probability t, its cross-entropy weighted 1/t, the sum divided by B*T. The sampler is LLaDA's low-confidence
remasking, eager, with a full forward pass every step.

It imports none of the project's model, ops or training code, so it measures the same shape independently: it
reads only a preset (`benchmarking/presets/<name>.toml`) and the size table `config.schema.MODEL_SIZES`.

Run it in the same GPU job as the project's bench, so that both figures come from one card at one clock, and
let the bench compute the ratios from the JSON lines (matched on `bench` and `config`):

    python3 -m benchmarking.reference --preset base > ref.jsonl
    python3 -m benchmarking.reference --preset base --sample >> ref.jsonl
    diffusionlm-bench-train --config benchmarking/presets/base.toml --steps 30 --label base --reference ref.jsonl
    diffusionlm-bench-infer --size xlarge --vocab-size 32768 --context-length 1024 --gen-len 256 \\
        --label base --reference ref.jsonl

Training prints one line {"bench": "train", "config": <preset>, "tokens_per_s", "step_ms" (median), ...};
--sample prints one {"bench": "sample", "batch", "gen_len", "steps", "latency_ms", "tokens_per_s", ...} per
batch size and step count. A sample line whose output still holds a mask token ("masks_left" > 0) exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarking.common import device_name, int_list
from benchmarking.preset import preset_names, preset_path
from config.schema import MODEL_SIZES

REF = "benchmarking/reference.py"
MASK_ID = 3  # the project's default model.mask_token_id; training data is drawn from ids 5 and up
EPS = 1e-3


class Rotary(nn.Module):
    """Rotate-half RoPE; cos/sin tables for every position up to max_len."""

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, H, T, D]
        n = x.size(-2)
        cos, sin = self.cos[:n].to(x.dtype), self.sin[:n].to(x.dtype)
        lo, hi = x.chunk(2, dim=-1)
        return torch.cat((lo * cos - hi * sin, hi * cos + lo * sin), dim=-1)


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        hidden = math.ceil(8 * d / 3 / 64) * 64
        self.attn_norm, self.mlp_norm = nn.RMSNorm(d, eps=1e-6), nn.RMSNorm(d, eps=1e-6)
        self.qkv, self.out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.gate_up, self.down = nn.Linear(d, 2 * hidden, bias=False), nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor, rope: Rotary) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(b, n, 3, self.n_heads, d // self.n_heads)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        y = F.scaled_dot_product_attention(rope(q), rope(k), v)  # bidirectional: no causal mask
        x = x + self.out(y.transpose(1, 2).reshape(b, n, d))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class DiffusionLM(nn.Module):
    def __init__(self, vocab: int, d: int, n_layers: int, n_heads: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)  # the mask token is one of the vocabulary's rows
        self.rope = Rotary(d // n_heads, max_len)
        self.blocks = nn.ModuleList(Block(d, n_heads) for _ in range(n_layers))
        self.norm = nn.RMSNorm(d, eps=1e-6)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, self.rope)
        return self.head(self.norm(x))


def mdlm_loss(model: nn.Module, x0: torch.Tensor) -> torch.Tensor:
    b, n = x0.shape
    offset = torch.rand((), device=x0.device)
    t = EPS + (1 - EPS) * ((offset + torch.arange(b, device=x0.device) / b) % 1)  # antithetic times
    masked = torch.rand(b, n, device=x0.device) < t[:, None]
    logits = model(torch.where(masked, MASK_ID, x0))
    nll = F.cross_entropy(logits.float().flatten(0, 1), x0.flatten(), reduction="none").view(b, n)
    return (nll * masked / t[:, None]).sum() / (b * n)


@dataclasses.dataclass
class Shape:
    d_model: int
    n_layers: int
    n_heads: int
    context_length: int
    vocab_size: int
    batch_size: int


def build_model(shape: Shape, device: torch.device) -> DiffusionLM:
    torch.manual_seed(0)
    return DiffusionLM(shape.vocab_size, shape.d_model, shape.n_layers, shape.n_heads, shape.context_length).to(device)


def bench_train(args: argparse.Namespace, shape: Shape, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    model = build_model(shape, device)
    params = sum(p.numel() for p in model.parameters())  # the tied head is counted once
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), fused=cuda)
    forward = torch.compile(model) if args.compile else model
    data = torch.randint(5, shape.vocab_size, (4, shape.batch_size, shape.context_length), device=device)

    def step(x0: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = mdlm_loss(forward, x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    for i in range(args.warmup):
        step(data[i % len(data)])
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    losses, events, walls = [], [], []
    for i in range(args.steps):
        x0 = data[(args.warmup + i) % len(data)]
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            losses.append(step(x0))
            end.record()
            events.append((start, end))
        else:
            t0 = time.perf_counter()
            losses.append(step(x0))
            walls.append(time.perf_counter() - t0)
    if cuda:
        torch.cuda.synchronize(device)
        walls = [a.elapsed_time(b) / 1e3 for a, b in events]
    tokens_per_s = shape.batch_size * shape.context_length * args.steps / sum(walls)
    # executed matrix-product FLOPs per token, forward + backward: every parameter (the head runs at every
    # position) plus QK^T and AV over the full bidirectional T x T
    flops_per_token = 6 * params + 12 * shape.n_layers * shape.d_model * shape.context_length
    return {"bench": "train", "ref": REF, "config": args.preset, "compile": args.compile,
            "device": device_name(device), "params": params,
            "tokens_per_s": tokens_per_s, "achieved_tflops": tokens_per_s * flops_per_token / 1e12,
            "step_ms": statistics.median(walls) * 1e3, "loss_first": losses[0].item(), "loss_last": losses[-1].item(),
            "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if cuda else None,
            "precision": "bf16 autocast" if cuda else "fp32", "steps": args.steps, "warmup": args.warmup,
            "timer": "cuda events" if cuda else "perf_counter", "shape": dataclasses.asdict(shape)}


@torch.no_grad()
def generate(model: nn.Module, batch: int, gen_len: int, steps: int, device: torch.device) -> torch.Tensor:
    """Low-confidence remasking: each step predicts every position (Gumbel-max over the softmax), then commits
    the k still-masked positions whose prediction has the highest probability; k is spread evenly over steps."""
    x = torch.full((batch, gen_len), MASK_ID, dtype=torch.long, device=device)
    steps = min(steps, gen_len)
    for i in range(steps):
        k = gen_len // steps + (1 if i < gen_len % steps else 0)
        logits = model(x).float()
        logits[..., MASK_ID] = -math.inf  # never commit the mask token itself
        gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_(1e-20, 1.0)))
        candidates = (logits + gumbel).argmax(-1)
        confidence = torch.softmax(logits, dim=-1).gather(-1, candidates[..., None]).squeeze(-1)
        confidence = confidence.masked_fill(x != MASK_ID, -math.inf)
        chosen = confidence.topk(k, dim=-1).indices
        x = x.scatter(1, chosen, candidates.gather(1, chosen))
    return x


def bench_sample(args: argparse.Namespace, shape: Shape, device: torch.device) -> list[dict]:
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    model = build_model(shape, device).to(dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    records = []
    for batch in args.batch_sizes:
        for steps in args.sample_steps:
            generate(model, batch, args.gen_len, steps, device)  # warm-up: allocator, kernel selection
            latencies, masks_left = [], 0
            for _ in range(args.reps):
                if cuda:
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                out = generate(model, batch, args.gen_len, steps, device)
                if cuda:
                    torch.cuda.synchronize(device)
                latencies.append(time.perf_counter() - t0)
                masks_left += int((out == MASK_ID).sum())
            latency = statistics.median(latencies)
            records.append({"bench": "sample", "ref": REF, "config": args.preset, "batch": batch,
                            "gen_len": args.gen_len, "steps": steps, "latency_ms": latency * 1e3,
                            "tokens_per_s": batch * args.gen_len / latency, "masks_left": masks_left,
                            "device": device_name(device), "params": params,
                            "dtype": str(dtype).removeprefix("torch."), "reps": args.reps,
                            "timer": "perf_counter, CUDA synchronized" if cuda else "perf_counter",
                            "shape": dataclasses.asdict(shape)})
            print(json.dumps(records[-1]), flush=True)
    return records


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m benchmarking.reference", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help=f"benchmark preset: {', '.join(preset_names())}")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed training steps first (compilation, allocator)")
    p.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                   help="run the model eagerly (default: the preset's training.compile)")
    p.add_argument("--sample", action="store_true", help="time the naive sampler instead of training")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    for flag in ("batch-size", "context-length", "vocab-size", "d-model", "n-layers", "n-heads"):
        p.add_argument(f"--{flag}", type=int, help="override the preset's value")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 32], help="--sample: comma-separated batch sizes")
    p.add_argument("--sample-steps", type=int_list, default=[64, 256], help="--sample: denoising step counts")
    p.add_argument("--gen-len", type=int, default=256, help="--sample: tokens generated per sample")
    p.add_argument("--reps", type=int, default=5, help="--sample: timed generations per setting (median)")
    return p


def resolve_shape(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Shape:
    try:
        path = preset_path(args.preset)
    except ValueError as e:
        parser.error(str(e))
    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    model, data = cfg.get("model", {}), cfg.get("data", {})
    d, n_layers, n_heads = MODEL_SIZES[model.get("size", "tiny")]
    shape = Shape(model.get("d_model", d), model.get("n_layers", n_layers), model.get("n_heads", n_heads),
                  model.get("context_length", 256), model.get("vocab_size", 8192), data.get("batch_size", 16))
    for field in dataclasses.fields(shape):
        value = getattr(args, field.name)
        if value is not None:
            if value < 1:
                parser.error(f"--{field.name.replace('_', '-')} must be >= 1, got {value}")
            setattr(shape, field.name, value)
    if args.compile is None:
        args.compile = bool(cfg.get("training", {}).get("compile", False))
    if shape.d_model % shape.n_heads or (shape.d_model // shape.n_heads) % 2:
        parser.error(f"d_model {shape.d_model} must split into {shape.n_heads} heads of even width")
    if shape.vocab_size <= 5:
        parser.error(f"vocab size must exceed 5 (ids 0-4 are special), got {shape.vocab_size}")
    return shape


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shape = resolve_shape(args, parser)
    if args.steps < 1 or args.warmup < 0 or args.reps < 1 or args.gen_len < 1:
        parser.error("--steps, --reps and --gen-len must be >= 1, --warmup >= 0")
    if args.sample and args.gen_len > shape.context_length:
        parser.error(f"--gen-len {args.gen_len} exceeds the context length {shape.context_length}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    if not args.sample:
        print(json.dumps(bench_train(args, shape, device)), flush=True)
        return 0
    left = [r for r in bench_sample(args, shape, device) if r["masks_left"]]
    for r in left:
        print(f"error: batch {r['batch']}, steps {r['steps']}: {r['masks_left']} mask tokens left", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main())

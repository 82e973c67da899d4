"""Standalone timings of base's hot kernels on a CUDA GPU: attention backends, the block's matrix products,
and diffusionlm.ops' Triton kernels against the compiled PyTorch they replace (with their largest differences).

Base is d768, 12 heads of 64, T=1024, batch 64 (65,536 positions). On Hopper with flash-attn-4 it also
times the training attention paths (`ops.rotary_attention` with and without FlashAttention-4's backward),
and with quack the MLP's two paths (`ops.swiglu_mlp`: Triton kernels, or quack's gated products).
Prints one line per kernel with its time (median of triton.testing.do_bench) and TFLOP/s, so a profile of
the training step can be read against what each kernel does alone (benchmarking/reports/
2026-11-22-hopper-attention.md, -hopper-mlp.md, -triton-kernels.md):

    python3 scripts/microbench_base_kernels.py
"""

from __future__ import annotations

import functools
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from config.schema import MODEL_SIZES
from diffusionlm.models.transformer import default_ffn_hidden

# base = the named size xlarge at the reference's T=1024, batch 64, vocabulary 32768
D_MODEL, _, H = MODEL_SIZES["xlarge"]
B, T, D, FFN, VOCAB = 64, 1024, D_MODEL // H, default_ffn_hidden(D_MODEL), 32768


def bench(fn, grad_to_none=None) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=50, rep=300, return_mode="median", grad_to_none=grad_to_none)


def report_attention(name: str, flops_fwd: int, fwd: float, both: float) -> None:
    # backward does 2.5x the forward's matrix work (five products against two)
    print(f"attention {name:9s} fwd {fwd:.3f} ms ({flops_fwd / fwd / 1e9:.0f} TFLOP/s)  fwd+bwd {both:.3f} ms "
          f"({3.5 * flops_fwd / both / 1e9:.0f} TFLOP/s)")


def attention() -> None:
    # q, k, v as the model makes them: views of one [B, T, 3, H, D] projection
    qkv = torch.randn(B, T, 3, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    flops_fwd = 4 * B * H * T * T * D

    def views():
        return qkv.permute(2, 0, 3, 1, 4)

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    for name, backend in backends.items():
        try:
            with sdpa_kernel([backend]):
                grad = torch.randn_like(F.scaled_dot_product_attention(*views()))
                fwd = bench(lambda: F.scaled_dot_product_attention(*views()))
                both = bench(lambda g=grad: F.scaled_dot_product_attention(*views()).backward(g), [qkv])
        except RuntimeError as e:  # a backend this GPU or build lacks
            print(f"attention {name}: not available ({str(e).splitlines()[0][:120]})")
            continue
        report_attention(name, flops_fwd, fwd, both)
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention)
    q, k, v = (t.contiguous().requires_grad_() for t in views())
    grad = torch.randn_like(flex(q, k, v))
    fwd = bench(lambda: flex(q, k, v))
    both = bench(lambda: flex(q, k, v).backward(grad), [q, k, v])
    report_attention("flex", flops_fwd, fwd, both)


def matmuls() -> None:
    m = B * T
    shapes = {"qkv": (m, D_MODEL, 3 * D_MODEL), "proj": (m, D_MODEL, D_MODEL), "gate_up": (m, D_MODEL, 2 * FFN),
              "down": (m, FFN, D_MODEL), "head (half masked)": (m // 2, D_MODEL, VOCAB)}
    for name, (rows, k, n) in shapes.items():
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        gy = torch.randn(rows, n, device="cuda", dtype=torch.bfloat16)
        flops = 2 * rows * k * n
        times = {"fwd": bench(lambda x=x, w=w: x @ w.t()), "dX": bench(lambda gy=gy, w=w: gy @ w),
                 "dW": bench(lambda gy=gy, x=x: gy.t() @ x)}
        print(f"matmul {name:18s} " + "  ".join(f"{key} {t:.3f} ms ({flops / t / 1e9:.0f} TFLOP/s)"
                                                 for key, t in times.items()))


def swiglu_kernels() -> None:
    import diffusionlm.ops as ops

    swiglu, swiglu_backward = torch.ops.diffusionlm.swiglu, torch.ops.diffusionlm.swiglu_backward
    gate_up = torch.randn(B, T, 2 * FFN, device="cuda", dtype=torch.bfloat16)
    grad = torch.randn(B, T, FFN, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(ops.swiglu_reference)
    x = gate_up.clone().requires_grad_()
    ref = gate_up.float().requires_grad_()
    ops.swiglu_reference(ref).backward(grad.float())
    err_fwd = (swiglu(gate_up).float() - ops.swiglu_reference(gate_up.float())).abs().max()
    err_bwd = (swiglu_backward(gate_up, grad).float() - ref.grad).abs().max()
    times = {"fwd": bench(lambda: swiglu(gate_up)), "compiled fwd": bench(lambda: compiled(gate_up)),
             "bwd": bench(lambda: swiglu_backward(gate_up, grad)),
             "fwd+bwd": bench(lambda: (swiglu(gate_up), swiglu_backward(gate_up, grad))),
             "compiled fwd+bwd": bench(lambda: compiled(x).backward(grad), [x])}
    print("swiglu  " + "  ".join(f"{k} {t:.3f} ms" for k, t in times.items())
          + f"  max |diff| fwd {err_fwd:.3g} bwd {err_bwd:.3g}")


def cross_entropy_kernel() -> None:
    import diffusionlm.ops as ops

    rows = 34157  # base's static masked-row capacity at batch 64 x 1024
    logits = (3 * torch.randn(rows, VOCAB, device="cuda")).to(torch.bfloat16)
    logits[:, 3] = float("-inf")
    targets = torch.randint(5, VOCAB, (rows,), device="cuda")
    compiled = torch.compile(ops.row_cross_entropy_reference)
    kernel = torch.ops.diffusionlm.row_cross_entropy
    ours, ref = kernel(logits, targets), ops.row_cross_entropy_reference(logits, targets)
    ours_ms = bench(lambda: kernel(logits, targets))
    print(f"row CE  {ours_ms:.3f} ms  compiled {bench(lambda: compiled(logits, targets)):.3f} ms  "
          f"max |diff| {(ours[0] - ref[0]).abs().max():.3g}  argmax mismatches {int((ours[2] != ref[2]).sum())}")


def rotary_angles() -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, 1, D/2] in bf16, as the model's Rotary makes them (theta 10000)."""
    angles = torch.outer(torch.arange(T, device="cuda").float(),
                         1.0 / 10000 ** (torch.arange(0, D, 2, device="cuda").float() / D))
    return angles.cos()[:, None].bfloat16(), angles.sin()[:, None].bfloat16()


def rotary_kernel() -> None:
    import diffusionlm.ops as ops

    qkv = torch.randn(B, T, 3, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    cos, sin = rotary_angles()
    grads = [torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    results = {}
    triton = ops.KernelPolicy(triton="on")
    for name, fn in (("compiled", ops.rotary_qkv_reference), ("ours", functools.partial(ops.rotary_qkv,
                                                                                         kernels=triton))):
        f = torch.compile(fn)

        def step(f=f):
            torch.autograd.backward(f(qkv, cos, sin), grads)

        step()
        results[name] = (bench(step, [qkv]), qkv.grad.clone())
        qkv.grad = None
    diff = (results["ours"][1].float() - results["compiled"][1].float()).abs().max()
    print(f"rotary  fwd+bwd {results['ours'][0]:.3f} ms  compiled {results['compiled'][0]:.3f} ms  "
          f"max |diff| of the gradient {diff:.3g}")


def rotary_attention_paths() -> None:
    """ops.rotary_attention, compiled, forward + backward: cuDNN both ways against cuDNN's forward with
    FlashAttention-4's backward (Hopper with flash-attn-4 only), with the largest gradient difference."""
    import diffusionlm.ops as ops

    if not (ops.FA4_INSTALLED and torch.cuda.get_device_capability()[0] == 9):
        print("rotary attention: FlashAttention-4's backward not available here (needs Hopper and flash-attn-4)")
        return
    qkv = torch.randn(B, T, 3, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    cos, sin = rotary_angles()
    grad = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    results = {}
    for mode in ("sdpa", "auto"):
        kernels = ops.KernelPolicy(triton="on", attention="fa4" if mode == "auto" else "sdpa")
        torch._dynamo.reset()
        f = torch.compile(functools.partial(ops.rotary_attention, kernels=kernels))

        def step(f=f):
            f(qkv, cos, sin).backward(grad)

        step()
        results[mode] = (bench(step, [qkv]), qkv.grad.clone())
        qkv.grad = None
    diff = (results["auto"][1].float() - results["sdpa"][1].float()).abs().max()
    print(f"rotary attention fwd+bwd: cuDNN forward + FA4 backward {results['auto'][0]:.3f} ms  cuDNN both ways "
          f"{results['sdpa'][0]:.3f} ms  max |diff| of the gradient {diff:.3g}")


def swiglu_mlp_backward() -> None:
    # the down projection's input gradient and the SwiGLU backward: cuBLAS + kernel vs one fused kernel
    grad_y = torch.randn(B * T, D_MODEL, device="cuda", dtype=torch.bfloat16)
    down = 0.03 * torch.randn(D_MODEL, FFN, device="cuda", dtype=torch.bfloat16)
    gate_up = torch.randn(B * T, 2 * FFN, device="cuda", dtype=torch.bfloat16)
    fused = torch.ops.diffusionlm.down_grad_swiglu_backward

    def unfused() -> torch.Tensor:
        return torch.ops.diffusionlm.swiglu_backward(gate_up, grad_y @ down)

    diff = (fused(grad_y, down, gate_up).float() - unfused().float()).abs().max()
    print(f"mlp bwd fused {bench(lambda: fused(grad_y, down, gate_up)):.3f} ms  cuBLAS + swiglu kernel "
          f"{bench(unfused):.3f} ms  max |diff| {diff:.3g}")


def mlp_paths() -> None:
    # the whole MLP forward + backward at base's shape, as the model runs it: Triton path, then quack's
    # (Triton's TMA descriptors fail in a process once quack's kernels have run, so the order matters)
    from diffusionlm.ops import KernelPolicy, quack_mlp
    from diffusionlm.ops import swiglu_mlp as ops_swiglu_mlp

    x = torch.randn(B * T, D_MODEL, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gate_up = (0.02 * torch.randn(2 * FFN, D_MODEL, device="cuda")).to(torch.bfloat16).requires_grad_()
    down = (0.02 * torch.randn(D_MODEL, FFN, device="cuda")).to(torch.bfloat16).requires_grad_()
    grad = torch.randn(B * T, D_MODEL, device="cuda", dtype=torch.bfloat16)
    results = {}
    for mode in ("triton", "auto"):
        kernels = KernelPolicy(triton="on", mlp="quack" if mode == "auto" else "triton", quack_min_gate_up=0)
        if mode == "auto" and not quack_mlp.quack_mlp_available(x.device):
            print("mlp quack: not available here")
            break

        def swiglu_mlp(*args, kernels=kernels):
            return ops_swiglu_mlp(*args, kernels)

        swiglu_mlp(x, gate_up, down).backward(grad)  # compile (quack: and tune) before timing
        torch.cuda.synchronize()
        results[mode] = (bench(lambda: swiglu_mlp(x, gate_up, down), None),
                         bench(lambda: swiglu_mlp(x, gate_up, down).backward(grad), [x, gate_up, down]))
        swiglu_mlp(x, gate_up, down).backward(grad)
        grads = [t.grad.clone() for t in (x, gate_up, down)]
        for t in (x, gate_up, down):
            t.grad = None
        results[mode] += (grads,)
    line = "mlp fwd+bwd " + "  ".join(f"{m} fwd {f:.3f} ms fwd+bwd {fb:.3f} ms" for m, (f, fb, _) in results.items())
    if len(results) == 2:
        diffs = [(a.float() - b.float()).abs().max().item() for a, b in zip(results["triton"][2], results["auto"][2])]
        line += "  max |grad diff| x/gate_up/down " + "/".join(f"{d:.3g}" for d in diffs)
    print(line)


def main() -> int:
    if not torch.cuda.is_available():
        print("error: this microbenchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    attention()
    matmuls()
    swiglu_kernels()
    swiglu_mlp_backward()
    rotary_kernel()
    rotary_attention_paths()
    cross_entropy_kernel()
    mlp_paths()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

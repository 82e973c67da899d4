"""`diffusionlm-infer`: generate text from a trained model by iterative unmasking."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from config import add_config_arguments, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusionlm-infer", description="Generate text from a trained model.")
    add_config_arguments(parser, "infer.toml")
    parser.add_argument("--checkpoint", default=None, help="run dir, checkpoint dir or final/ export "
                        "(overrides inference.checkpoint)")
    parser.add_argument("--prompt", default=None, help="text to continue (overrides inference.prompt)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args, "infer.toml")
    import torch

    from diffusionlm.device import select_device
    from diffusionlm.inference import ModelLoadError, generate, inference_dtype, load_model
    from diffusionlm.ops import resolve_kernels
    from diffusionlm.tokenizer import load_tokenizer
    from profiling import Profiler

    inf = cfg.inference
    checkpoint = args.checkpoint or inf.checkpoint
    if checkpoint is None:
        print("error: no model given: pass --checkpoint PATH or set inference.checkpoint", file=sys.stderr)
        return 2
    try:
        device = select_device(inf.device)
        model, run_cfg, tok_path = load_model(checkpoint, device, resolve_kernels(cfg.kernels, device))
        model.to(inference_dtype(inf.precision, device))
    except (ModelLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if inf.total_length > run_cfg.model.context_length:
        print(f"error: inference.total_length ({inf.total_length}) exceeds the model's context_length "
              f"({run_cfg.model.context_length})", file=sys.stderr)
        return 2
    tokenizer = load_tokenizer(tok_path)
    prompt_text = args.prompt if args.prompt is not None else inf.prompt
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False).ids if prompt_text else []
    if len(prompt_ids) >= inf.total_length:
        print(f"error: the prompt has {len(prompt_ids)} tokens, leaving no room within "
              f"inference.total_length={inf.total_length}", file=sys.stderr)
        return 2
    prompt = torch.tensor([prompt_ids] * inf.num_samples, dtype=torch.long, device=device).view(inf.num_samples, -1)
    gen = torch.Generator(device=device).manual_seed(inf.seed)
    profiler = Profiler(cfg.profiling, Path(checkpoint), device)  # NVTX ranges with profiling.nvtx
    with profiler.range("generate"):
        ids = generate(model, prompt, inf.total_length, run_cfg.model.mask_token_id, steps=inf.steps,
                       strategy=inf.strategy, temperature=inf.temperature, generator=gen,
                       step_context=lambda: profiler.range("sampling_step", "fine"))
    profiler.close()
    for i, text in enumerate(tokenizer.decode_batch(ids.tolist(), skip_special_tokens=True)):
        if inf.num_samples > 1:
            print(f"--- sample {i}")
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

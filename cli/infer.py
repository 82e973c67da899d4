"""`diffusionlm-infer`: generate text from a trained model by iterative unmasking.

A prompt is continued up to `inference.total_length` tokens; a template fills its `[MASK:n]` spans, e.g.
`--template "Once upon a time [MASK:20] The end."`. With neither, and stdin a terminal (or with --interactive),
it reads one prompt a line (a line with `[MASK` is a template) until an empty line or end of input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from config import add_config_arguments, config_from_args

# handy flags, each the same as --set inference.<key>=VALUE (typed and checked by the schema)
FLAGS = {"num-samples": "num_samples", "length": "total_length", "steps": "steps", "block-length": "block_length",
         "strategy": "strategy", "temperature": "temperature", "top-k": "top_k", "top-p": "top_p",
         "threshold": "threshold", "seed": "seed"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusionlm-infer", description="Generate text from a trained model.",
                                     epilog="Every [inference] setting can also be given as --set inference.KEY=VALUE.")
    add_config_arguments(parser, "infer.toml")
    parser.add_argument("--checkpoint", default=None, help="run dir, checkpoint dir or final/ export "
                        "(overrides inference.checkpoint)")
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--prompt", default=None, help="text to continue (overrides inference.prompt)")
    text.add_argument("--template", default=None,
                      help="infilling template with [MASK:n] spans (overrides inference.template)")
    parser.add_argument("--interactive", action="store_true",
                        help="read prompts from stdin, one a line (the default when stdin is a terminal and no "
                             "--prompt/--template is given)")
    parser.add_argument("--no-stop-at-eos", action="store_true", help="keep the text after a generated <eos>")
    for flag, key in FLAGS.items():
        parser.add_argument(f"--{flag}", dest=f"flag_{key}", default=None, metavar="VALUE",
                            help=f"inference.{key}")
    return parser


def request_ids(text: str, is_template: bool, encode: Callable[[str], list[int]], model_cfg: Any,
                total_length: int) -> list[int]:
    """The template ids for a prompt (continued to total_length) or an infilling template, checked against the
    model; a TemplateError names the setting at fault."""
    from diffusionlm.inference import TemplateError, parse_template, prompt_template

    context = model_cfg.context_length
    if is_template:
        try:
            ids = parse_template(text, encode, model_cfg.mask_token_id)
        except TemplateError as e:
            raise TemplateError(f"inference.template: {e}") from None
        if len(ids) > context:
            raise TemplateError(f"inference.template: the template has {len(ids)} tokens, more than the model's "
                                f"context_length ({context})")
        if model_cfg.mask_token_id not in ids:
            raise TemplateError("inference.template: the template has no [MASK:n] span: nothing to generate")
        return ids
    if total_length > context:
        raise TemplateError(f"inference.total_length ({total_length}) exceeds the model's context_length ({context})")
    prompt = encode(text) if text else []
    try:
        return prompt_template(prompt, total_length, model_cfg.mask_token_id)
    except TemplateError as e:
        raise TemplateError(f"inference.prompt, inference.total_length: {e}") from None


def interactive_loop(respond: Callable[[str], str], stdin: TextIO, stdout: TextIO, stderr: TextIO,
                     show_prompt: bool) -> int:
    """Read a line, print `respond(line)`; an empty line or end of input quits (0), Ctrl-C too (130). A
    ValueError (a bad template) is reported and the loop goes on."""
    try:
        while True:
            if show_prompt:
                stdout.write("> ")
                stdout.flush()
            line = stdin.readline()
            if not line.strip():
                return 0
            try:
                stdout.write(respond(line.strip()) + "\n")
            except ValueError as e:
                stderr.write(f"error: {e}\n")
            stdout.flush()
    except KeyboardInterrupt:
        stdout.write("\n")
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = list(args.overrides) + [f"inference.{key}={getattr(args, 'flag_' + key)}" for key in
                                             FLAGS.values() if getattr(args, "flag_" + key) is not None]
    if args.no_stop_at_eos:
        args.overrides.append("inference.stop_at_eos=false")
    cfg = config_from_args(args, "infer.toml")
    inf = cfg.inference
    if args.prompt is not None:
        inf.prompt, inf.template = args.prompt, ""
    if args.template is not None:
        inf.template = args.template
    checkpoint = args.checkpoint or inf.checkpoint
    if checkpoint is None:
        print("error: no model given: pass --checkpoint PATH or set inference.checkpoint", file=sys.stderr)
        return 2
    text_given = args.prompt is not None or args.template is not None or bool(inf.template) or any(
        o.split("=", 1)[0].strip() in ("inference.prompt", "inference.template") for o in args.overrides)
    interactive = args.interactive or (not text_given and sys.stdin.isatty())

    from diffusionlm.data.documents import text_to_encoder
    from diffusionlm.device import select_device
    from diffusionlm.inference import (
        GenerationError,
        ModelLoadError,
        SamplerSettings,
        TemplateError,
        generate,
        has_marker,
        inference_dtype,
        load_model,
    )
    from diffusionlm.ops import resolve_kernels
    from diffusionlm.tokenizer import TokenizerError, load_tokenizer
    from profiling import Profiler

    try:
        device = select_device(inf.device)
        model, run_cfg, tok_path = load_model(checkpoint, device, resolve_kernels(cfg.kernels, device))
        model.to(inference_dtype(inf.precision, device))
        tokenizer = load_tokenizer(tok_path)
    except (ModelLoadError, TokenizerError, ValueError) as e:
        print(f"error: inference.checkpoint: {e}", file=sys.stderr)
        return 2
    if run_cfg.objective.name != "mdlm":
        print(f"error: inference.checkpoint: {checkpoint} was trained with objective {run_cfg.objective.name!r}; "
              "diffusionlm-infer samples masked diffusion (mdlm) models (score other runs with diffusionlm-eval)",
              file=sys.stderr)
        return 2
    encoder = text_to_encoder(tokenizer)  # "<mask>" typed in a prompt is text, not the mask id

    def encode(text: str) -> list[int]:
        return encoder.encode(text, add_special_tokens=False).ids

    settings = SamplerSettings.from_config(inf)
    profiler = Profiler(cfg.profiling, Path(checkpoint), device)  # NVTX ranges with profiling.nvtx

    def respond(text: str, is_template: bool) -> str:
        ids = request_ids(text, is_template, encode, run_cfg.model, inf.total_length)
        with profiler.range("generate"):
            gen = generate(model, run_cfg.model, ids, settings, batch_size=inf.num_samples,
                           step_context=lambda: profiler.range("sampling_step", "fine"))
        texts = tokenizer.decode_batch(gen.rows(inf.stop_at_eos), skip_special_tokens=True)
        cut = "cut at <eos>, " if inf.stop_at_eos else ""
        print(f"generated {gen.generated_lengths(inf.stop_at_eos)} tokens ({cut}{gen.steps} steps, "
              f"{gen.model_calls} model calls)", file=sys.stderr)
        if inf.num_samples == 1:
            return texts[0]
        return "\n".join(f"--- sample {i}\n{t}" for i, t in enumerate(texts))

    try:
        if interactive:
            print("one prompt a line ([MASK:n] marks spans to fill); an empty line quits", file=sys.stderr)
            return interactive_loop(lambda line: respond(line, has_marker(line)), sys.stdin, sys.stdout,
                                    sys.stderr, show_prompt=sys.stdin.isatty())
        try:
            print(respond(inf.template or inf.prompt, bool(inf.template)))
        except (TemplateError, GenerationError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    finally:
        profiler.close()


if __name__ == "__main__":
    raise SystemExit(main())

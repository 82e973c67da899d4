"""Typed configuration for every diffusionlm entry point.

Each TOML section maps to one pydantic model; unknown keys are rejected everywhere (`extra="forbid"`)
so a typo fails loudly instead of silently training with a default. `[model]` and `[objective]` are
chosen by their `family` / `name` key from the plug-in registry (config/registry.py); `[kernels]` is
in config/kernels.py. Every training counter (`*_iteration`, profiling steps) counts micro-steps.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializeAsAny, ValidationInfo, field_validator, model_validator

from config import registry
from config.kernels import KernelsConfig
from config.model import MODEL_SIZES, ModelConfig, TransformerConfig
from config.objective import MDLMConfig, ObjectiveConfig
from config.section import Section

__all__ = ["MODEL_SIZES", "Config", "KernelsConfig", "MDLMConfig", "ModelConfig", "ObjectiveConfig", "Section",
           "TransformerConfig"]


class DataConfig(Section):
    source: Literal["builtin", "hub", "files", "shards"] = "builtin"
    # hub
    dataset_name: str | None = None
    dataset_config: str | None = None
    revision: str | None = None
    train_split: str = "train"
    val_split: str | None = None
    # local files
    data_files: list[str] = Field(default_factory=list)
    file_format: Literal["auto", "json", "jsonl", "parquet", "text"] = "auto"
    text_field: str = "text"
    # pre-tokenized shards (directory written by diffusionlm-make-data)
    shards_dir: str | None = None
    # built-in procedurally generated stories
    builtin_seed: int = 0
    builtin_num_stories: int = Field(20000, gt=0)
    # when the source has no validation split: every `val_every`-th document goes to validation
    val_every: int = Field(20, ge=2)
    # batching
    batch_size: int = Field(16, gt=0, description="per device, per micro-step")
    packing: bool = True
    random_trunc_prob: float = Field(0.0, ge=0, le=1)
    shuffle_buffer_size: int = Field(1000, ge=0)
    shuffle_seed: int = 0
    num_workers: int = Field(0, ge=0)
    pin_memory: bool = True
    tokenize_batch_size: int = Field(256, gt=0)
    max_doc_chars: int = Field(200_000, gt=0, description="longer documents are truncated and counted")

    @model_validator(mode="after")
    def _check_source(self) -> DataConfig:
        if self.source == "hub" and not self.dataset_name:
            raise ValueError("data.source = 'hub' needs data.dataset_name")
        if self.source == "files" and not self.data_files:
            raise ValueError("data.source = 'files' needs data.data_files")
        if self.source == "shards" and not self.shards_dir:
            raise ValueError("data.source = 'shards' needs data.shards_dir")
        return self


class TokenizerConfig(Section):
    path: str | None = Field(None, description="tokenizer.json, or a directory with vocab.json + merges.txt")
    vocab_size: int = Field(8192, gt=5, description="size when a tokenizer is trained for the run")
    train_docs: int = Field(20000, gt=0, description="documents used when training one for the run")
    min_frequency: int = Field(2, ge=1)


class MuonHiddenConfig(Section):
    """2-D hidden matrices, updated by Muon (orthogonalised momentum)."""

    lr: float = Field(0.02, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    momentum: float = Field(0.95, ge=0, lt=1)


class MuonAuxConfig(Section):
    """Embedding, head and scalar parameters, updated by Muon's auxiliary AdamW."""

    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)


class MuonConfig(Section):
    hidden: MuonHiddenConfig = MuonHiddenConfig()
    head: MuonAuxConfig = MuonAuxConfig()
    embed: MuonAuxConfig = MuonAuxConfig()
    scalar: MuonAuxConfig = MuonAuxConfig()


class OptimizerConfig(Section):
    optimizer_name: Literal["adamw", "muon"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    fused: Literal["auto", "on", "off"] = "auto"
    grad_clip: float = Field(1.0, ge=0, allow_inf_nan=True,
                             description="max global grad L2 norm; 0 (or inf) disables clipping")
    warmup_iteration: int = Field(100, ge=0, description="micro-steps of linear warmup")
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    muon: MuonConfig = MuonConfig()


class TrainingConfig(Section):
    max_train_iteration: int = Field(600, gt=0, description="micro-steps")
    grad_accum_steps: int = Field(1, gt=0)
    val_freq_iteration: int = Field(200, gt=0, description="micro-steps between validations")
    max_val_iteration: int = Field(10, gt=0, description="validation batches")
    skip_validation: bool = False
    log_freq_iteration: int = Field(10, gt=0)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    deferred_stats: Literal["auto", "on", "off"] = Field(
        "auto", description="read each step's loss/grad-norm one step late, skipping bad steps on the device, so "
        "the host never waits for the GPU; needs fused AdamW. auto = on CUDA")
    max_consecutive_bad_steps: int = Field(5, gt=0)
    sample_freq_iteration: int = Field(0, ge=0, description="micro-steps between sample dumps; 0 = at end only")
    num_samples: int = Field(2, ge=0)
    sample_steps: int = Field(32, gt=0)

    @model_validator(mode="after")
    def _check_accum(self) -> TrainingConfig:
        if self.max_train_iteration % self.grad_accum_steps != 0:
            raise ValueError("max_train_iteration must be a multiple of grad_accum_steps")
        return self


class LoggingConfig(Section):
    backend: Literal["console", "wandb", "noop"] = "console"
    run_name: str | None = Field(None, description="default: <size>-<timestamp>")
    output_dir: str = "runs"
    log_activation_norms: bool = False
    log_weight_norms: bool = False
    progress_bar: Literal["auto", "on", "off"] = "auto"

    @model_validator(mode="after")
    def _check_name(self) -> LoggingConfig:
        if self.run_name is not None and (not self.run_name or "/" in self.run_name or self.run_name in (".", "..")):
            raise ValueError("logging.run_name must be a non-empty name without '/'")
        return self


class WandbConfig(Section):
    project: str = "diffusionlm"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] = "online"
    tags: list[str] = Field(default_factory=list)
    log_checkpoints: bool = True


class CheckpointConfig(Section):
    save_freq_iteration: int = Field(200, gt=0, description="micro-steps between checkpoints")
    keep_last: int = Field(3, gt=0)
    resume: str | None = Field(None, description="'auto', a checkpoint directory, or unset")


class EvalConfig(Section):
    """`diffusionlm-eval`: held-out likelihood (MDLM's NELBO bound, AR's exact NLL), masked-token accuracy and sample
    quality. The held-out text is the evaluated run's own `[data]` (its `split`), with any `[data]` keys given to
    the eval command (`--set data.KEY=VALUE`) applied on top."""

    checkpoint: list[str] = Field(default_factory=list, description="runs to evaluate (run dir, checkpoint dir or "
                                  "final/ export); two or more are also compared on the same text")
    split: Literal["val", "train"] = "val"
    max_sequences: int = Field(256, gt=0, description="held-out rows (context windows) scored per checkpoint")
    max_tokens: int | None = Field(None, gt=0, description="stop once this many tokens are scored; unset = no cap")
    batch_size: int | None = Field(None, gt=0, description="rows per forward pass; default: the run's data.batch_size")
    k: int = Field(16, ge=1, description="diffusion times drawn per sequence for the NELBO")
    stratified: bool = Field(True, description="t_k = eps + (1-eps)(k+u)/K with one uniform u per sequence; false "
                             "draws the K times independently")
    eps: float | None = Field(None, gt=0, lt=1, description="smallest time; default: the run's objective.eps")
    mask_rates: list[float] = Field(default_factory=lambda: [0.15, 0.5, 0.85],
                                    description="fixed mask rates for masked-token accuracy (each in (0, 1))")
    mask_mode: Literal["exact", "independent"] = Field(
        "exact", description="exact: mask round(rate * n) of each row's n tokens; independent: each w.p. rate")
    metrics: list[Literal["auto", "nelbo", "masked_acc", "nll"]] = Field(
        default_factory=lambda: ["auto"], description="auto = nelbo + masked_acc for MDLM runs, nll for AR runs")
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast for the forward passes; log-softmax and sums are fp32 / fp64 regardless")
    samples: str | None = Field(None, description="texts to score: one per line, or JSON lines (strings or "
                                "objects with a `text` field)")
    judge: str | None = Field(None, description="checkpoint scoring the samples (generative perplexity); an AR "
                              "run gives the exact NLL, an MDLM run its NELBO bound")
    generate: int = Field(0, ge=0, description="samples to generate from each MDLM checkpoint and score")
    generate_length: int | None = Field(None, gt=0, description="tokens per generated sample; default: context")
    generate_steps: int | None = Field(None, gt=0, description="denoising steps; default: generate_length")
    generate_strategy: Literal["ancestral", "low_confidence", "random", "threshold"] = Field(
        "ancestral", description="the sampler's strategy (see [inference]); ancestral is MDLM's reverse process")
    samples_output: str | None = Field(None, description="write generated samples here as JSON lines")
    output: str | None = Field(None, description="also write the JSON report to this file")

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("mask_rates")
    @classmethod
    def _check_rates(cls, rates: list[float]) -> list[float]:
        bad = [r for r in rates if not 0 < r < 1]
        if bad:
            raise ValueError(f"mask rates must lie strictly between 0 and 1 (got {', '.join(map(str, bad))})")
        return rates


class DDPConfig(Section):
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    nproc_per_node: int | Literal["auto"] = "auto"
    shard_optimizer_state: bool = True
    bucket_cap_mb: float = Field(
        100.0, gt=0, description="gradient bucket size (and ZeRO-1 broadcast bucket size): fewer, larger all-reduces "
        "and fewer compiled-graph splits; 100 beat torch's 25 by 0.6-2 points of 4-GPU efficiency on H200s")
    gradient_as_bucket_view: bool = True
    gradient_compression: Literal["none", "bf16", "fp16"] = Field(
        "none", description="all-reduce gradients in this dtype (torch's DDP compression hooks): half the bytes "
        "on the wire, the averaged gradient rounded once to it")
    nccl_protocol: Literal["auto", "Simple", "LL", "LL128"] = Field(
        "auto", description="NCCL_PROTO for every NCCL collective of the run (nccl backend only); auto leaves the "
        "choice to NCCL's tuner, which picked LL for 25 MB buckets on 4 H200s "
        "(benchmarking/reports/2026-11-22-ddp-scaling.md)")
    find_unused_parameters: bool = False
    timeout_s: float = Field(600.0, gt=0)
    max_restarts: int = Field(0, ge=0)


class ProfilingConfig(Section):
    nvtx: bool = False
    nvtx_level: Literal["coarse", "fine", "verbose"] = "coarse"
    start_step: int | None = Field(None, ge=0, description="micro-step that opens the capture window")
    stop_step: int | None = Field(None, ge=0)
    torch_trace: bool = False
    trace_dir: str | None = Field(None, description="default: runs/<run>/profile")
    memory_history: bool = False

    @model_validator(mode="after")
    def _check_window(self) -> ProfilingConfig:
        if (self.start_step is None) != (self.stop_step is None):
            raise ValueError("set both profiling.start_step and profiling.stop_step, or neither")
        if self.start_step is not None and self.stop_step <= self.start_step:
            raise ValueError("profiling.stop_step must be greater than profiling.start_step")
        return self


class InferenceConfig(Section):
    """Sampling settings of `diffusionlm-infer` (and of the trainer's periodic samples). Lengths are checked
    against the model when sampling, not here: a training config need not fit its inference settings."""

    checkpoint: str | None = Field(None, description="run dir, checkpoint dir, or final/ export")
    prompt: str = Field("", description="text to continue up to total_length")
    template: str = Field("", description="infilling template, e.g. 'Once upon a time [MASK:20] The end.' "
                          "(replaces prompt and total_length)")
    total_length: int = Field(128, gt=0, description="prompt + generated tokens")
    steps: int = Field(64, gt=0, description="denoising steps (threshold: at most this many)")
    block_length: int = Field(0, ge=0, description="semi-autoregressive blocks of this many positions, "
                              "denoised left to right; 0 = one block")
    strategy: Literal["ancestral", "low_confidence", "random", "threshold"] = "low_confidence"
    temperature: float = Field(1.0, ge=0, description="0 = greedy")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 = off")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling; 1 = off")
    threshold: float = Field(0.9, gt=0, lt=1, description="threshold strategy: commit every position whose "
                             "candidate is at least this probable")
    stop_at_eos: bool = Field(True, description="drop a generated span's text after its first <eos>")
    num_samples: int = Field(1, gt=0)
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="weights and activations for sampling; auto = bf16 on CUDA, else fp32")


class ExportConfig(Section):
    """`diffusionlm-export`: an edge deploy bundle (fp16 safetensors, a torch.export program, ONNX for TensorRT) of
    one trained model at one static shape. Shapes are static because TensorRT builds its fastest engines for
    fixed shapes; a second shape is a second bundle. Lengths are checked against the model when it loads."""

    checkpoint: str | None = Field(None, description="run dir, checkpoint dir or final/ export")
    output: str | None = Field(None, description="bundle directory to write (must be absent or empty)")
    target: Literal["jetson", "generic"] = Field(
        "jetson", description="jetson: the ONNX graph is meant for a TensorRT fp16 engine, so the export also refuses "
        "when the model computed in fp16 disagrees with fp32; generic: fp16 figures are recorded, only the fp16 "
        "weights are checked")
    length: int = Field(128, gt=0, description="tokens per row (static); at most the model's context_length")
    batch: int = Field(1, gt=0, description="rows per call (static)")
    opset: int = Field(18, ge=18, description="ONNX opset; the dynamo exporter writes 18 or later (its conversion "
                       "to 17 fails on this model's ReduceMean)")
    seed: int = Field(0, description="seed of the random parity input")
    fp32_tolerance: float = Field(1e-3, gt=0, description="largest max-abs logit difference allowed between the eager "
                                  "fp32 model and the exported program / onnxruntime")
    fp16_min_agreement: float = Field(0.95, ge=0, le=1, description="smallest fraction of positions whose argmax "
                                      "the fp16 model must share with the fp32 model")


class Config(Section):
    model: SerializeAsAny[ModelConfig] = Field(default_factory=TransformerConfig)
    objective: SerializeAsAny[ObjectiveConfig] = Field(default_factory=MDLMConfig)
    kernels: KernelsConfig = KernelsConfig()
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    training: TrainingConfig = TrainingConfig()
    logging: LoggingConfig = LoggingConfig()
    wandb: WandbConfig = WandbConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    ddp: DDPConfig = DDPConfig()
    profiling: ProfilingConfig = ProfilingConfig()
    inference: InferenceConfig = InferenceConfig()
    eval: EvalConfig = EvalConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="before")
    @classmethod
    def _read_diffusion_section(cls, data: Any) -> Any:
        # Runs written before `[objective]` existed kept MDLM's settings in `[diffusion]`.
        if isinstance(data, dict) and "diffusion" in data:
            data = dict(data)
            if "objective" in data:
                raise ValueError("give either [objective] or the older [diffusion] section, not both")
            data["objective"] = {"name": "mdlm", **data.pop("diffusion")}
        return data

    @field_validator("model", "objective", mode="before")
    @classmethod
    def _plugin_section(cls, value: Any, info: ValidationInfo) -> Any:
        """The section of the family / objective its `family` / `name` key names, validated by its own class."""
        base, lookup, key, default = {
            "model": (ModelConfig, registry.family, "family", "transformer"),
            "objective": (ObjectiveConfig, registry.objective, "name", "mdlm"),
        }[info.field_name]
        if isinstance(value, base):
            return value
        data = dict(value or {})
        return lookup(data.get(key, default)).config.model_validate(data)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        trains = registry.objective(self.objective.name).families
        if self.model.family not in trains:
            raise ValueError(f"objective {self.objective.name!r} cannot train model family {self.model.family!r} "
                             f"(it trains: {', '.join(trains)})")
        self.objective.check_model(self.model)  # on the section: a check may read its own settings
        # Shards carry their own tokenizer (checked against [model] when it loads), so no size to compare.
        trains_one = self.tokenizer.path is None and self.data.source != "shards"
        if trains_one and self.tokenizer.vocab_size > self.model.vocab_size:
            raise ValueError(
                f"tokenizer.vocab_size ({self.tokenizer.vocab_size}) must not exceed "
                f"model.vocab_size ({self.model.vocab_size})"
            )
        return self

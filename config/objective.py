"""`[objective]`: which loss trains the model, and each objective's own settings.

An objective's section subclasses `ObjectiveConfig` and fixes `name` to its registry name; the registry
(config/registry.py) picks the class from the `name` key and knows which model families it can train.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from config.model import ModelConfig
from config.section import Section


class ObjectiveConfig(Section):
    name: str = Field("mdlm", description="training objective, a name in config.registry.OBJECTIVES")
    # Whether diffusionlm.inference.generate (whole-sequence masked diffusion) samples a model trained this way;
    # the trainer's periodic samples are written only then.
    masked_diffusion_sampling: ClassVar[bool] = False

    @classmethod
    def check_model(cls, model_cfg: ModelConfig) -> None:
        """Refuse a `[model]` this objective cannot train (raise ValueError naming both settings). Called on the
        section by the `Config` cross-checks, so every entry point rejects the pair before building anything; a
        subclass whose check reads its own settings overrides it as an instance method. Default: any."""


class MDLMConfig(ObjectiveConfig):
    """Masked diffusion (MDLM): mask with probability p(t), score the masked tokens with the ELBO weight."""

    name: Literal["mdlm"] = "mdlm"
    masked_diffusion_sampling: ClassVar[bool] = True
    schedule: Literal["loglinear", "linear", "cosine"] = "loglinear"
    eps: float = Field(1e-3, gt=0, lt=1, description="smallest diffusion time sampled")
    antithetic: bool = True
    masked_only_logits: bool = Field(True, description="compute the head only at masked positions")
    loss_path: Literal["auto", "masked_rows", "reference"] = Field(
        "auto", description="masked_rows: times and masks drawn as the reference does, then body, head on the "
        "masked rows and cross-entropy as one compiled graph with static shapes (no host sync); reference: the "
        "plain objective (boolean-mask selection, F.cross_entropy). auto = masked_rows on CUDA when "
        "masked_only_logits, else reference. Both compute the same loss from the same draws")


class ARConfig(ObjectiveConfig):
    """Autoregressive baseline: next-token cross-entropy on a causal model (diffusionlm/diffusion/ar.py), trained
    by the same trainer, data and tokenizer as MDLM so the two are compared on equal terms."""

    name: Literal["ar"] = "ar"

    @classmethod
    def check_model(cls, model_cfg: ModelConfig) -> None:
        if getattr(model_cfg, "causal", False) is not True:
            raise ValueError("objective 'ar' needs model.causal = true (a bidirectional model sees the token it "
                             "predicts); set model.causal = true or choose another objective")


class BD3LMConfig(ObjectiveConfig):
    """Block diffusion (BD3-LM, Arriola et al. 2025): rows split into blocks of `block_size` tokens, each block
    masked at its own time and denoised given the clean blocks before it (diffusionlm/diffusion/bd3lm.py)."""

    name: Literal["bd3lm"] = "bd3lm"
    block_size: int = Field(16, ge=1, description="tokens per block; must divide model.context_length")
    schedule: Literal["loglinear", "linear", "cosine"] = "loglinear"
    eps: float = Field(1e-3, gt=0, lt=1, description="smallest diffusion time sampled (without clip_min)")
    antithetic: bool = Field(True, description="stratify the times over all blocks of the batch")
    clip_min: float | None = Field(None, gt=0, le=1, description="clipped schedule: times drawn uniformly from "
                                   "[clip_min, clip_max] (the mask rates, under loglinear); unset = eps")
    clip_max: float | None = Field(None, gt=0, le=1, description="upper end of the clipped window; unset = 1")

    @model_validator(mode="after")
    def _window(self) -> BD3LMConfig:
        lo, hi = self.time_window()
        if lo >= hi:
            raise ValueError(f"objective.clip_min (or eps when unset: {lo}) must be below objective.clip_max "
                             f"({hi}): the time window is empty")
        return self

    def time_window(self) -> tuple[float, float]:
        """[lo, hi]: the interval the diffusion times are drawn from uniformly."""
        return (self.eps if self.clip_min is None else self.clip_min, 1.0 if self.clip_max is None else self.clip_max)

    def check_model(self, model_cfg: ModelConfig) -> None:  # type: ignore[override]
        """An instance check (the block size is this section's own setting): a bidirectional model whose
        context_length is a whole number of blocks, without adaLN (one time per row; here each block has its own)."""
        if getattr(model_cfg, "causal", False):
            raise ValueError("objective 'bd3lm' needs model.causal = false (its block mask replaces causal "
                             "attention); set model.causal = false or choose objective 'ar'")
        if model_cfg.context_length % self.block_size:
            raise ValueError(f"objective.block_size ({self.block_size}) must divide model.context_length "
                             f"({model_cfg.context_length}): each row is a whole number of blocks")
        if getattr(model_cfg, "time_conditioning", "none") != "none":
            raise ValueError("objective 'bd3lm' needs model.time_conditioning = 'none' (adaLN takes one time per "
                             "row; block diffusion draws one per block)")

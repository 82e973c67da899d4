"""`[objective]`: which loss trains the model, and each objective's own settings.

An objective's section subclasses `ObjectiveConfig` and fixes `name` to its registry name; the registry
(config/registry.py) picks the class from the `name` key and knows which model families it can train.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.model import ModelConfig
from config.section import Section


class ObjectiveConfig(Section):
    name: str = Field("mdlm", description="training objective, a name in config.registry.OBJECTIVES")

    @classmethod
    def check_model(cls, model_cfg: ModelConfig) -> None:
        """Refuse a `[model]` this objective cannot train (raise ValueError naming both settings). Called by the
        `Config` cross-checks, so every entry point rejects the pair before building anything; default: any."""


class MDLMConfig(ObjectiveConfig):
    """Masked diffusion (MDLM): mask with probability p(t), score the masked tokens with the ELBO weight."""

    name: Literal["mdlm"] = "mdlm"
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

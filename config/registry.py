"""The plug-in registry: model families and training objectives by name.

A family registers its config section (a `ModelConfig` subclass) and a builder,
`build(model_cfg, kernels) -> nn.Module`; an objective registers its section (an `ObjectiveConfig`
subclass), a builder `build(objective_cfg, model_cfg) -> objective`, and the families it can train.
Builders are named as "module:attribute" strings, imported when a run builds them, so validating a
config never imports torch. The contracts are in the README's architecture section.

Adding a family or an objective is its own files (config section, module, tests) and one line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from config.model import ModelConfig, TransformerConfig
from config.objective import ARConfig, BD3LMConfig, MDLMConfig, ObjectiveConfig


@dataclass(frozen=True)
class Plugin:
    name: str
    config: type
    builder: str | Callable[..., Any]
    families: tuple[str, ...] = ()  # objectives only: the model families it can train

    def build(self, *args: Any, **kwargs: Any) -> Any:
        builder = self.builder
        if isinstance(builder, str):
            module, _, attribute = builder.partition(":")
            builder = getattr(importlib.import_module(module), attribute)
        return builder(*args, **kwargs)


FAMILIES: dict[str, Plugin] = {}
OBJECTIVES: dict[str, Plugin] = {}


def register_family(name: str, config: type[ModelConfig], builder: str | Callable[..., Any]) -> None:
    if not (isinstance(config, type) and issubclass(config, ModelConfig)):
        raise TypeError(f"family {name!r}: its config must subclass config.model.ModelConfig")
    if config.model_fields["family"].default != name:
        raise ValueError(f"family {name!r}: its config's `family` default must be {name!r}")
    FAMILIES[name] = Plugin(name, config, builder)


def register_objective(name: str, config: type[ObjectiveConfig], builder: str | Callable[..., Any],
                       families: tuple[str, ...]) -> None:
    if not (isinstance(config, type) and issubclass(config, ObjectiveConfig)):
        raise TypeError(f"objective {name!r}: its config must subclass config.objective.ObjectiveConfig")
    if config.model_fields["name"].default != name:
        raise ValueError(f"objective {name!r}: its config's `name` default must be {name!r}")
    OBJECTIVES[name] = Plugin(name, config, builder, tuple(families))


def _lookup(table: dict[str, Plugin], kind: str, name: Any) -> Plugin:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown {kind} {name!r} (registered: {', '.join(sorted(table))})")
    return table[name]


def family(name: Any) -> Plugin:
    return _lookup(FAMILIES, "model family", name)


def objective(name: Any) -> Plugin:
    return _lookup(OBJECTIVES, "objective", name)


register_family("transformer", TransformerConfig, "diffusionlm.models.transformer:DiffusionTransformer")
register_objective("mdlm", MDLMConfig, "diffusionlm.diffusion.mdlm:build_mdlm", families=("transformer",))
register_objective("ar", ARConfig, "diffusionlm.diffusion.ar:build_ar", families=("transformer",))
register_objective("bd3lm", BD3LMConfig, "diffusionlm.diffusion.bd3lm:build_bd3lm", families=("transformer",))

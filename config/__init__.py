"""Configuration schemas, TOML loading and `--set` overrides. Imports nothing else of ours."""

from config.load import (
    ConfigError,
    add_config_arguments,
    config_from_args,
    config_to_toml,
    load_config,
    resource_path,
)
from config.schema import MODEL_SIZES, Config

__all__ = [
    "MODEL_SIZES",
    "Config",
    "ConfigError",
    "add_config_arguments",
    "config_from_args",
    "config_to_toml",
    "load_config",
    "resource_path",
]

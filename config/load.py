"""Load a TOML config, apply `--set section.key=value` overrides, validate once, report errors well.

Precedence, the same for every setting and entry point: `--set` > environment > config file > defaults.
The environment counts only through the few debugging variables of `ENV_OVERRIDES`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from config.schema import Config


class ConfigError(Exception):
    """A config that cannot be used; the message is meant for the user, one screen at most."""


# Debugging overrides: environment variable -> (setting, accepted values -> the setting's value).
_ON_OFF = {**dict.fromkeys(("1", "true", "yes", "on"), True), **dict.fromkeys(("0", "false", "no", "off"), False)}
ENV_OVERRIDES: dict[str, tuple[str, dict[str, Any]]] = {
    "DIFFUSIONLM_TRITON": ("kernels.triton", {"auto": "auto", "1": "auto", "on": "on", "0": "off", "off": "off",
                                              "interpret": "interpret"}),
    "DIFFUSIONLM_ATTENTION": ("kernels.attention", {v: v for v in ("auto", "sdpa", "fa4")}),
    "DIFFUSIONLM_MLP": ("kernels.mlp", {v: v for v in ("auto", "triton", "quack", "pytorch")}),
    "DIFFUSIONLM_CSRC": ("kernels.csrc", {v: v for v in ("auto", "jit", "off")}),
    "DIFFUSIONLM_NVTX": ("profiling.nvtx", _ON_OFF),
    "DIFFUSIONLM_NVTX_LEVEL": ("profiling.nvtx_level", {v: v for v in ("coarse", "fine", "verbose")}),
}


def apply_environment(data: dict[str, Any], environ: dict[str, str] | os._Environ[str]) -> None:
    """Apply the set, non-empty variables of ENV_OVERRIDES to nested dicts in place."""
    for name, (key, values) in ENV_OVERRIDES.items():
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        if raw.lower() not in values:
            raise ConfigError(f"{name}={raw!r} (overrides {key}): expected one of {', '.join(values)}")
        section, field = key.split(".")
        node = data.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{name}: {section!r} is a value, not a section")
        node[field] = values[raw.lower()]


def resource_path(name: str) -> Path:
    """Path of a TOML file shipped in `config/resources/`."""
    return Path(str(resources.files("config") / "resources" / name))


def _is_text_field(parts: list[str]) -> bool:
    """Whether the schema types this key as plain text (then `inf`, `nan` or `123` stay strings)."""
    model: Any = Config
    for i, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        if typing.get_origin(annotation) is typing.Annotated:  # SerializeAsAny[...] around a section
            annotation = typing.get_args(annotation)[0]
        if i == len(parts) - 1:
            if annotation is str:
                return True
            if typing.get_origin(annotation) in (typing.Union, types.UnionType):
                args = set(typing.get_args(annotation))
                return str in args and args <= {str, type(None)}
            return False
        model = annotation
    return False


def _parse_value(raw: str, parts: list[str]) -> Any:
    # TOML literal syntax gives typed values (3, 1e-3, true, [1, 2], "x"); anything else is a string.
    if _is_text_field(parts) and not (raw.startswith(('"', "'"))):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` to nested dicts in place."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = _parse_value(raw.strip(), parts)


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<config>"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                environ: dict[str, str] | os._Environ[str] | None = None) -> Config:
    """Read TOML (or start from defaults when `path` is None), apply the environment's debugging overrides
    (`environ`, default os.environ; pass {} for none) and then `overrides`, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"cannot parse {p} as TOML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"cannot read {p}: not UTF-8 text ({e})") from None
    apply_environment(data, os.environ if environ is None else environ)
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid config{where}:\n{format_validation_error(e)}") from None


def _drop_none(obj: Any) -> Any:
    # TOML has no null: an unset optional is simply absent, which loads back as None.
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [_drop_none(v) for v in obj]
    return obj


def config_to_toml(cfg: Config) -> str:
    return tomli_w.dumps(_drop_none(cfg.model_dump(mode="json")))


def add_config_arguments(parser: argparse.ArgumentParser, default_resource: str) -> None:
    """The three config flags that every entry point shares."""
    parser.add_argument(
        "--config", default=None, metavar="PATH",
        help=f"TOML config file (default: the packaged {default_resource})",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one setting, typed by the schema (repeatable), e.g. --set training.max_train_iteration=50",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")


def config_from_args(args: argparse.Namespace, default_resource: str) -> Config:
    """Resolve the config for a CLI; on bad input print a clear message and exit with code 2."""
    path = args.config if args.config is not None else resource_path(default_resource)
    try:
        cfg = load_config(path, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.print_config:
        sys.stdout.write(config_to_toml(cfg))
        raise SystemExit(0)
    return cfg

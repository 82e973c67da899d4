"""`ddp.nccl_protocol`: exported as NCCL_PROTO before the process group exists, for nccl only."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.schema import DDPConfig
from ddp.context import apply_nccl_settings


def test_auto_leaves_an_inherited_setting_alone():
    env = {"NCCL_PROTO": "LL128"}
    assert apply_nccl_settings(DDPConfig(), "nccl", env) == {}
    assert env == {"NCCL_PROTO": "LL128"}


def test_explicit_protocol_is_exported_for_nccl_and_replaces_the_inherited_one():
    env = {"NCCL_PROTO": "LL"}
    assert apply_nccl_settings(DDPConfig(nccl_protocol="Simple"), "nccl", env) == {"NCCL_PROTO": "Simple"}
    assert env["NCCL_PROTO"] == "Simple"


def test_gloo_ignores_the_protocol():
    env: dict[str, str] = {}
    assert apply_nccl_settings(DDPConfig(nccl_protocol="Simple"), "gloo", env) == {}
    assert env == {}


def test_unknown_protocol_is_refused_by_the_schema():
    with pytest.raises(ValidationError, match="nccl_protocol"):
        DDPConfig(nccl_protocol="simple-ish")

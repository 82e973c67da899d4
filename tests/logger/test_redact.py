from __future__ import annotations

from logger import redact, redact_text
from logger.redact import REDACTED, is_secret_key


def test_secret_keys_are_redacted_at_any_depth():
    config = {
        "wandb": {"api_key": "k1", "API-KEY": "k2", "project": "diffusionlm"},
        "remote": {"password": "pw", "ssh": {"Secret": "s", "hf_token": "t", "token": "t2"}},
        "hosts": [{"auth_token": "x", "host": "gpu1"}],
        "empty_secret": None,
    }
    clean = redact(config)
    assert clean["wandb"] == {"api_key": REDACTED, "API-KEY": REDACTED, "project": "diffusionlm"}
    assert clean["remote"] == {
        "password": REDACTED,
        "ssh": {"Secret": REDACTED, "hf_token": REDACTED, "token": REDACTED},
    }
    assert clean["hosts"] == [{"auth_token": REDACTED, "host": "gpu1"}]
    assert clean["empty_secret"] is None  # nothing to hide
    assert config["wandb"]["api_key"] == "k1"  # the input is not modified


def test_token_ids_and_token_counts_are_not_secrets():
    config = {"model": {"mask_token_id": 3, "pad_token_id": 0}, "tokens_per_s": 5.0, "tokenizer": {"path": "t"}}
    assert redact(config) == config
    for key in ("mask_token_id", "tokens_per_s", "tokenizer", "max_tokens", "train_docs"):
        assert not is_secret_key(key), key


def test_wandb_api_key_value_is_redacted_wherever_it_appears(monkeypatch):
    key = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", key)
    assert redact({"notes": key, "args": ["--key", key], "other": "fine"}) == {
        "notes": REDACTED,
        "args": ["--key", REDACTED],
        "other": "fine",
    }
    assert redact_text(f"login with {key} ok") == "login with *** ok"


def test_short_env_values_do_not_blank_out_messages(monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "a")
    assert redact_text("a cat sat") == "a cat sat"

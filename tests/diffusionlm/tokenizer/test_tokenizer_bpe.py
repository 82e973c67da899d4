import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import load_config
from config.schema import ModelConfig
from diffusionlm.data import iter_texts
from diffusionlm.data.builtin_corpus import generate_story
from diffusionlm.tokenizer import (
    TokenizerError,
    build_tokenizer,
    check_tokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_sha256,
    train_tokenizer,
)

SPECIALS = ["<pad>", "<bos>", "<eos>", "<mask>", "<unk>"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer((generate_story(0, i) for i in range(300)), vocab_size=512)


def test_trained_tokenizer_has_fixed_special_ids_and_size(tok):
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3, 4]
    assert tok.get_vocab_size() == 512
    check_tokenizer(tok, ModelConfig(vocab_size=512))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_arbitrary_unicode(tok, text):
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_round_trip_multiscript_and_whitespace(tok):
    text = "Ünïcödé  \t\n中文字符 🙂👩‍👩‍👧 \x00\x7f \u200b العربية\r\n  "
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_save_load_keeps_everything(tok, tmp_path):
    path = tmp_path / "sub" / "tokenizer.json"
    save_tokenizer(tok, path)
    loaded = load_tokenizer(path)
    assert tokenizer_sha256(loaded) == tokenizer_sha256(tok)
    assert load_tokenizer(tmp_path / "sub").encode("Lily ran").ids == tok.encode("Lily ran").ids  # a directory


def test_training_is_deterministic():
    docs = [generate_story(1, i) for i in range(200)]
    assert tokenizer_sha256(train_tokenizer(docs, 400)) == tokenizer_sha256(train_tokenizer(docs, 400))


def _gpt2_style_files(tok, out):
    """vocab.json + merges.txt as GPT-2 ships them: no <pad>/<mask>, ids from 0, an <|endoftext|> at the end."""
    tok.model.save(str(out))
    vocab = json.loads((out / "vocab.json").read_text())
    ordered = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in SPECIALS]
    gpt2_vocab = {t: i for i, t in enumerate([*ordered, "<|endoftext|>"])}
    (out / "vocab.json").write_text(json.dumps(gpt2_vocab))
    return gpt2_vocab


def test_load_gpt2_vocab_merges_pair_adds_specials(tok, tmp_path):
    gpt2_vocab = _gpt2_style_files(tok, tmp_path)
    for where in (tmp_path, f"{tmp_path / 'vocab.json'},{tmp_path / 'merges.txt'}"):
        loaded = load_tokenizer(where)
        assert [loaded.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3, 4]
        assert loaded.get_vocab_size() == len(gpt2_vocab) + 5
        text = "Once upon a time, Lily's 🐻 said: \"hello\"."
        assert loaded.decode(loaded.encode(text).ids, skip_special_tokens=False) == text
        # the same merges apply: token strings match the original tokenizer's
        assert loaded.encode(text).tokens == tok.encode(text).tokens


def test_check_refuses_mismatched_model_config(tok):
    with pytest.raises(TokenizerError, match=r"model\.eos_token_id"):
        check_tokenizer(tok, ModelConfig(vocab_size=512, eos_token_id=5, unk_token_id=4))
    with pytest.raises(TokenizerError, match=r"larger than model.vocab_size \(300\)"):
        check_tokenizer(tok, ModelConfig(vocab_size=300))


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot load"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(TokenizerError, match=r"merges\.txt"):
        load_tokenizer(tmp_path)  # a directory without the pair


def test_load_refuses_tokenizer_with_other_special_ids(tmp_path):
    from tokenizers import Tokenizer, models, trainers

    other = Tokenizer(models.BPE())
    other.train_from_iterator(["abc abd"], trainers.BpeTrainer(vocab_size=50, special_tokens=["<unk>", "<pad>"]))
    other.save(str(tmp_path / "t.json"))
    with pytest.raises(TokenizerError, match="<pad> has id 1, expected 0"):
        load_tokenizer(tmp_path / "t.json")


def test_build_tokenizer_trains_on_builtin_and_checks():
    cfg = load_config(None, ["tokenizer.vocab_size=400", "tokenizer.train_docs=100", "model.vocab_size=512"])
    tok = build_tokenizer(cfg, iter_texts(cfg, "train"))
    assert tok.get_vocab_size() == 400 and tok.token_to_id("<mask>") == 3

"""Small, fast data-pipeline settings shared by the data tests."""

import pytest

from config import load_config
from diffusionlm.data.builtin_corpus import generate_story
from diffusionlm.tokenizer import train_tokenizer

BASE = [
    "model.vocab_size=512", "model.context_length=64", "inference.total_length=32",
    "tokenizer.vocab_size=512", "data.batch_size=4", "data.shuffle_buffer_size=32",
    "data.tokenize_batch_size=16", "data.builtin_num_stories=400",
]


def make_cfg(*overrides: str):
    return load_config(None, [*BASE, *overrides])


@pytest.fixture(scope="session")
def tok512():
    return train_tokenizer((generate_story(7, i) for i in range(300)), vocab_size=512)

"""Templates and prompts, the block plan, settings, and cutting rows at <eos>."""

from __future__ import annotations

import pytest
import torch

from config.schema import InferenceConfig
from diffusionlm.inference import Generation, SamplerSettings, TemplateError, parse_template, prompt_template
from diffusionlm.inference.schedule import plan_blocks, tokens_per_step

M = 3


def encode(text: str) -> list[int]:  # one id a character, away from the special ids
    return [10 + ord(c) % 50 for c in text]


def test_a_span_between_two_texts() -> None:
    ids = parse_template("Once upon a time [MASK:20] The end.", encode, M)
    assert ids == encode("Once upon a time") + [M] * 20 + encode(" The end.")


def test_several_spans_single_masks_and_text_only() -> None:
    assert parse_template("[MASK:2]a[MASK]b [MASK:3]", encode, M) == [M, M, *encode("a"), M, *encode("b"), M, M, M]
    assert parse_template("just text", encode, M) == encode("just text")
    assert parse_template("[MASK: 4]", encode, M) == [M] * 4
    assert parse_template("", encode, M) == []


@pytest.mark.parametrize("bad", ["a [MASK:x] b", "[MASK:0]", "[MASK:-2]", "[MASK:20", "x [MASKED] y", "[MASK:2.5]"])
def test_malformed_markers_are_clear_errors(bad: str) -> None:
    with pytest.raises(TemplateError, match="malformed mask marker"):
        parse_template(bad, encode, M)


def test_text_that_encodes_to_the_mask_id_is_refused() -> None:
    with pytest.raises(TemplateError, match="encodes to the <mask> id"):
        parse_template("x", lambda text: [M], M)


def test_prompt_template_continues_to_the_total_length() -> None:
    assert prompt_template([7, 8], 5, M) == [7, 8, M, M, M]
    assert prompt_template([], 3, M) == [M, M, M]
    with pytest.raises(TemplateError, match="leaving no room"):
        prompt_template([7, 8, 9], 3, M)


def test_tokens_per_step_spreads_evenly() -> None:
    assert tokens_per_step(10, 4) == [3, 3, 2, 2]
    assert tokens_per_step(3, 8) == [1, 1, 1]
    assert sum(tokens_per_step(257, 64)) == 257


def test_blocks_count_positions_from_the_first_mask_and_share_the_steps() -> None:
    positions = [3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 22]  # given gaps at 11..13 and 16..21
    blocks = plan_blocks(positions, steps=7, block_length=4)  # blocks 3-6, 7-10, 11-14, 15-18, (19-22)
    assert [b.positions for b in blocks] == [[3, 4, 5, 6], [7, 8, 9, 10], [14], [15], [22]]
    assert [b.steps for b in blocks] == [2, 2, 1, 1, 1]
    assert [b.reveals for b in blocks] == [[2, 2], [2, 2], [1], [1], [1]]
    one = plan_blocks(positions, steps=100, block_length=0)
    assert len(one) == 1 and one[0].steps == 100 and one[0].reveals == [1] * 11  # ancestral keeps all 100 steps
    assert [b.steps for b in plan_blocks(positions, steps=1, block_length=4)] == [1] * 5
    assert plan_blocks([], 5, 0) == []


def test_settings_are_checked_and_come_from_the_config() -> None:
    for name, value in [("temperature", -1.0), ("steps", 0), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1),
                        ("threshold", 1.0), ("threshold", 0.0), ("block_length", -1), ("strategy", "best"),
                        ("temperature", float("nan"))]:
        with pytest.raises(ValueError, match=f"sampler setting {name} must be"):
            SamplerSettings(**{name: value})
    inf = InferenceConfig(strategy="threshold", steps=9, block_length=4, temperature=0.5, top_k=7, top_p=0.9,
                          threshold=0.8, seed=3)
    s = SamplerSettings.from_config(inf, steps=5)
    assert s == SamplerSettings("threshold", 5, 4, 0.5, 7, 0.9, 0.8, 3)


def test_rows_are_cut_at_the_first_generated_eos_of_each_span() -> None:
    given = [True, True, False, False, False, True, False, False]
    ids = torch.tensor([[7, 2, 20, 2, 21, 8, 22, 23],  # a given <eos> is not a stop; a generated one ends its span
                        [7, 9, 20, 21, 22, 8, 2, 23]])
    gen = Generation(ids=ids, given=given, eos_token_id=2, steps=4, model_calls=4)
    assert gen.rows() == [[7, 2, 20, 8, 22, 23], [7, 9, 20, 21, 22, 8]]
    assert gen.generated_lengths() == [3, 3]
    assert gen.rows(stop_at_eos=False) == ids.tolist() and gen.generated_lengths(False) == [5, 5]

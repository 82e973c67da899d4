"""The generation API end to end: every strategy fills every mask, keeps the given tokens, is independent of the
batch, honours blocks, greedy, top-k, forbidden ids, the ancestral cache and threshold decoding."""

from __future__ import annotations

import pytest
import torch

from diffusionlm.inference import GenerationError, SamplerSettings, generate, prompt_template
from tests.diffusionlm.inference.toys import (
    CONTEXT,
    EOS,
    MASK,
    PAD,
    VOCAB,
    Counting,
    ToyModel,
    table_model,
    tiny_transformer,
)

STRATEGIES = ["ancestral", "low_confidence", "random", "threshold"]
M = MASK
# two spans: 6 masked after a 2-token prompt, then 2 given tokens, then 8 masked, then 1 given
TEMPLATE = [7, 8, M, M, M, M, M, M, 9, 10, M, M, M, M, M, M, M, M, 11]


@pytest.fixture(scope="module")
def tiny():
    return tiny_transformer(0)


@pytest.mark.parametrize("block_length", [0, 5])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_fills_every_mask_and_keeps_the_given_tokens(tiny, strategy: str, block_length: int) -> None:
    model, cfg = tiny
    masks_left = []
    settings = SamplerSettings(strategy=strategy, steps=7, block_length=block_length, seed=3)
    gen = generate(model, cfg, TEMPLATE, settings, batch_size=3,
                   on_step=lambda i, x: masks_left.append(int((x == MASK).sum())))
    given = torch.tensor(TEMPLATE) != MASK
    assert gen.ids.shape == (3, len(TEMPLATE))
    assert not (gen.ids == MASK).any() and not (gen.ids == PAD).any()
    assert torch.equal(gen.ids[:, given], torch.tensor(TEMPLATE)[given].expand(3, -1))
    assert gen.given == given.tolist()
    assert masks_left == sorted(masks_left, reverse=True) and masks_left[-1] == 0 and len(masks_left) == gen.steps
    assert gen.model_calls <= gen.steps
    if strategy in ("low_confidence", "random"):  # a fixed schedule: blocks 2-6, 7-11 and 12-17 share 7 steps
        assert gen.steps == gen.model_calls == 7
    again = generate(model, cfg, TEMPLATE, settings, batch_size=3)
    assert torch.equal(gen.ids, again.ids), "same seed, same text"


@pytest.mark.parametrize("block_length", [0, 4])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_row_does_not_depend_on_its_batch(tiny, strategy: str, block_length: int) -> None:
    model, cfg = tiny
    settings = SamplerSettings(strategy=strategy, steps=6, block_length=block_length, temperature=1.0, seed=11)
    template = prompt_template([7, 8, 9], 20, MASK)
    eight = generate(model, cfg, template, settings, batch_size=8).ids
    assert len({tuple(r) for r in eight.tolist()}) > 1, "rows draw different samples"
    for r in range(8):
        one = generate(model, cfg, template, settings, batch_size=1, first_row=r).ids
        assert torch.equal(one[0], eight[r]), f"row {r}"
    assert torch.equal(generate(model, cfg, template, settings, batch_size=3, first_row=5).ids, eight[5:])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_greedy_is_deterministic_and_top_k_1_is_greedy(tiny, strategy: str) -> None:
    model, cfg = tiny
    template = prompt_template([7], 16, MASK)
    greedy = SamplerSettings(strategy=strategy, steps=5, temperature=0.0, seed=1)
    a = generate(model, cfg, template, greedy, batch_size=2).ids
    assert torch.equal(a, generate(model, cfg, template, greedy, batch_size=2).ids)
    if strategy in ("low_confidence", "threshold"):  # no randomness at all: the seed does not matter
        assert torch.equal(a, generate(model, cfg, template, greedy.replace(seed=99), batch_size=2).ids)
        assert torch.equal(a[0], a[1])
    top1 = generate(model, cfg, template, greedy.replace(temperature=1.3, top_k=1), batch_size=2).ids
    assert torch.equal(a, top1)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mask_and_pad_are_never_produced(strategy: str) -> None:
    cfg = tiny_transformer(0)[1]
    table = torch.zeros(CONTEXT, VOCAB)
    table[:, PAD] = 40.0  # the model loves <pad>; it must never be drawn
    table[:, 20] = 1.0
    gen = generate(table_model(table), cfg, [M] * 12, SamplerSettings(strategy=strategy, steps=4, temperature=2.0),
                   batch_size=4)
    assert not (gen.ids == PAD).any() and not (gen.ids == MASK).any()


def test_generation_stops_at_eos_per_row() -> None:
    cfg = tiny_transformer(0)[1]
    table = torch.zeros(CONTEXT, VOCAB)
    table[torch.arange(CONTEXT), 10 + torch.arange(CONTEXT) % 20] = 5.0
    table[6, EOS] = 50.0  # <eos> at position 6
    template = [7, 8, M, M, M, M, M, M, M, M, 9, M, M]  # an <eos> cuts its span only, given tokens stay
    gen = generate(table_model(table), cfg, template, SamplerSettings(temperature=0.0, steps=10), batch_size=2)
    assert gen.ids[0, 6] == EOS
    row = [7, 8, 12, 13, 14, 15, 9, 21, 22]
    assert gen.rows() == [row, row]
    assert gen.generated_lengths() == [6, 6]
    assert gen.rows(stop_at_eos=False)[0] == gen.ids[0].tolist() and gen.generated_lengths(False) == [10, 10]


def test_the_ancestral_cache_skips_the_network_while_nothing_changes(tiny) -> None:
    model, cfg = tiny
    counting = Counting(model)
    template = prompt_template([7, 8], 10, MASK)  # 8 positions, 40 steps: most steps reveal nothing
    prev = [torch.tensor(template)[None].expand(2, -1).clone()]
    changed = []

    def record(i: int, x: torch.Tensor) -> None:
        changed.append(not torch.equal(prev[0], x))
        prev[0] = x.clone()

    gen = generate(counting, cfg, template, SamplerSettings(strategy="ancestral", steps=40), batch_size=2,
                   on_step=record)
    assert gen.steps == 40 and not (gen.ids == MASK).any()
    expected_calls = 1 + sum(changed[:-1])  # the first step, then after every step that changed something
    assert counting.calls == gen.model_calls == expected_calls < 20


def test_ancestral_reveals_each_position_with_probability_one_over_the_steps_left() -> None:
    cfg = tiny_transformer(0)[1]
    model = table_model(torch.zeros(CONTEXT, VOCAB))
    n, steps = 30, 4
    first_step = []
    generate(model, cfg, [M] * n, SamplerSettings(strategy="ancestral", steps=steps, seed=5), batch_size=64,
             on_step=lambda i, x: first_step.append(float((x != MASK).float().mean())) if i == 0 else None)
    assert first_step[0] == pytest.approx(1 / steps, abs=0.03)  # 64 * 30 positions at p = 1/4


def test_threshold_commits_confident_positions_together_and_at_least_one_a_step() -> None:
    cfg = tiny_transformer(0)[1]
    sure = torch.zeros(CONTEXT, VOCAB)
    sure[torch.arange(CONTEXT), 10 + torch.arange(CONTEXT) % 20] = 30.0  # probability ~1 everywhere
    template = prompt_template([7], 13, MASK)  # 12 positions
    settings = SamplerSettings(strategy="threshold", steps=12, threshold=0.9)
    model = table_model(sure)
    gen = generate(model, cfg, template, settings)
    assert gen.model_calls == 1 < settings.steps and not (gen.ids == MASK).any()
    assert generate(model, cfg, template, settings.replace(block_length=4)).model_calls == 3  # a call a block

    unsure = table_model(torch.zeros(CONTEXT, VOCAB))  # probability 1/38: nothing is above the threshold
    commits = []
    generate(unsure, cfg, template, settings, on_step=lambda i, x: commits.append(int((x != MASK).sum())))
    assert [b - a for a, b in zip([1, *commits], commits)] == [1] * 12  # one a step
    paced = generate(unsure, cfg, template, settings.replace(steps=5))
    assert paced.steps == 5 and not (paced.ids == MASK).any()  # steps is an upper bound


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_blocks_are_committed_left_to_right(tiny, strategy: str) -> None:
    model, cfg = tiny
    template = prompt_template([7, 8, 9], 19, MASK)  # 16 positions in blocks of 4 from position 3
    snapshots = []
    generate(model, cfg, template, SamplerSettings(strategy=strategy, steps=8, block_length=4), batch_size=4,
             on_step=lambda i, x: snapshots.append((x != MASK)[:, 3:].reshape(4, 4, 4).clone()))
    for done in snapshots:  # [row, block, position]
        full = done.all(-1)
        touched = done.any(-1)
        for b in range(3):
            assert not (touched[:, b + 1] & ~full[:, b]).any(), f"block {b + 1} started before block {b} was full"
    assert snapshots[-1].all()


def test_blocks_share_the_steps() -> None:
    cfg = tiny_transformer(0)[1]
    model = table_model(torch.zeros(CONTEXT, VOCAB))
    gen = generate(model, cfg, [M] * 16, SamplerSettings(steps=8, block_length=4))
    assert gen.steps == 8  # two steps a block, two tokens a step
    assert generate(model, cfg, [M] * 16, SamplerSettings(steps=2, block_length=4)).steps == 4  # >= 1 a block


def test_a_bf16_model_samples_in_float64() -> None:
    model, cfg = tiny_transformer(0, "model.time_conditioning=adaln")
    gen = generate(model.to(torch.bfloat16), cfg, prompt_template([7], 12, MASK),
                   SamplerSettings(strategy="low_confidence", steps=4), batch_size=2)
    assert not (gen.ids == MASK).any()


def test_bad_requests_are_refused_with_a_clear_message(tiny) -> None:
    model, cfg = tiny
    with pytest.raises(GenerationError, match="more than the model's context_length"):
        generate(model, cfg, [M] * (CONTEXT + 1))
    with pytest.raises(GenerationError, match="no <mask> position"):
        generate(model, cfg, [7, 8, 9])
    with pytest.raises(GenerationError, match="same places"):
        generate(model, cfg, torch.tensor([[7, M, M], [M, 7, M]]))
    with pytest.raises(GenerationError, match="batch_size"):
        generate(model, cfg, [M, M], batch_size=0)
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        generate(model, cfg, [VOCAB, M])
    rows = generate(model, cfg, torch.tensor([[7, M, M], [8, M, M]]), SamplerSettings(steps=2)).ids
    assert rows[:, 0].tolist() == [7, 8]


def test_toy_model_follows_the_contract() -> None:
    toy = ToyModel(lambda ids: torch.zeros(*ids.shape, VOCAB))
    ids = torch.full((2, 5), M)
    assert toy(ids).shape == (2, 5, VOCAB) and toy(ids, output_index=torch.tensor([0, 9])).shape == (2, VOCAB)
    assert toy(ids)[0, 0, MASK] == float("-inf")


def test_the_benchmark_offers_every_strategy(capsys) -> None:
    import json

    from benchmarking import bench_infer
    from diffusionlm.inference import STRATEGIES as ALL

    choices = next(a.choices for a in bench_infer.build_parser()._actions if a.dest == "strategy")
    assert sorted(choices) == sorted(ALL) == STRATEGIES
    argv = ["--size", "tiny", "--set", "model.n_layers=1", "--context-length", "16", "--vocab-size", "300",
            "--gen-len", "8", "--batch-sizes", "2", "--steps", "4", "--reps", "1", "--warmup", "0"]
    for strategy in ("ancestral", "threshold"):
        assert bench_infer.main([*argv, "--strategy", strategy]) == 0
        figure = json.loads(capsys.readouterr().out)["figures"][0]
        assert figure["model_calls"] <= figure["steps_taken"]

"""Counter-based row streams: exact 32-bit arithmetic, deterministic, a function of (seed, row, step, stream,
position, index) only."""

from __future__ import annotations

import torch

from diffusionlm.inference.streams import ORDER, TOKENS, RowStreams, hash32


def _lowbias32(x: int) -> int:  # the reference, in Python's unbounded integers
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hash32_is_exact_32_bit_arithmetic_without_int64_overflow() -> None:
    xs = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xDEADBEEF, *range(1000, 1100)]
    assert hash32(torch.tensor(xs)).tolist() == [_lowbias32(x) for x in xs]
    many = hash32(torch.arange(200_000))
    assert many.unique().numel() == 200_000 and int(many.min()) >= 0 and int(many.max()) < 2**32  # a bijection


def test_uniforms_are_in_the_open_interval_with_the_right_moments() -> None:
    u = RowStreams(7, 4).uniform(3, TOKENS, torch.arange(500), 100)
    assert u.shape == (4, 500, 100) and u.dtype == torch.float64
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    frac = (u * 2**24).frac()  # more than float32's 24 bits: values fall between float32's grid points
    assert float((frac != 0).double().mean()) > 0.99


def test_a_value_depends_only_on_its_coordinates() -> None:
    s = RowStreams(5, 3)
    full = s.uniform(2, TOKENS, torch.arange(10), 8)
    assert torch.equal(s.uniform(2, TOKENS, torch.tensor([4, 7]), 8), full[:, [4, 7]])  # any subset of positions
    assert torch.equal(RowStreams(5, 1, first_row=2).uniform(2, TOKENS, torch.arange(10), 8)[0], full[2])
    assert torch.equal(RowStreams(5, 3).uniform(2, TOKENS, torch.arange(10), 8), full)  # no hidden state
    differs = [s.uniform(3, TOKENS, torch.arange(10), 8), s.uniform(2, ORDER, torch.arange(10), 8),
               RowStreams(6, 3).uniform(2, TOKENS, torch.arange(10), 8)]
    for other in differs:
        assert not torch.isclose(other, full).any()
    assert not torch.isclose(full[0], full[1]).any()
    assert s.uniform(0, ORDER, torch.arange(6)).shape == (3, 6)


def test_negative_and_huge_seeds_work() -> None:
    for seed in (-1, 2**80):
        u = RowStreams(seed, 2).uniform(0, ORDER, torch.arange(4))
        assert ((u > 0) & (u < 1)).all()

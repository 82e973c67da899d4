"""Shards keep document indices, not tokens, in the shuffle buffer, and packed batches are built whole.

Both are pure speed-ups: the batches must be exactly those of a token buffer built row by row, and a
restored state must continue them exactly, while the state stays small enough to ship with every batch.
"""

import io
import pickle

import numpy as np
import pytest
import torch

from diffusionlm.data import DataError, build_stream
from diffusionlm.data.make_shards import make_shards
from diffusionlm.data.producer import BatchProducer, BatchSpec
from diffusionlm.data.selection import Selection
from diffusionlm.data.shards import ShardSource
from diffusionlm.data.sources import BuiltinSource
from tests.diffusionlm.data.conftest import make_cfg

BUFFER = 1000


@pytest.fixture(scope="module")
def tinystories_shards(tinystories_path, tok512, tmp_path_factory):
    out = tmp_path_factory.mktemp("tinystories_shards")
    make_shards(make_cfg('data.source="files"', f'data.data_files=["{tinystories_path}"]'), tok512, out)
    return out


def _producer(shards, packing=True, trunc=0.0, batch_size=16, context_length=128, state=None):
    source = ShardSource(shards, "train")
    spec = BatchSpec(batch_size, context_length, packing, trunc, BUFFER, 3, 0, 2, 200_000, 64)
    return BatchProducer(source, Selection("train", False, 20, 0, 1), None, spec, state)


def _same_batches(a, b):
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)  # how the trainer checkpoints it
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_whole_batch_packing_and_index_buffer_match_row_by_row_token_buffer(tinystories_shards):
    # 60 batches of 128 x 256 tokens pass the end of the ~1.5M-token epoch, so the wrap is covered too
    fast = _producer(tinystories_shards, batch_size=128, context_length=256)
    reference = _producer(tinystories_shards, batch_size=128, context_length=256)
    reference.by_ref = False  # before the first batch: the reference buffer holds token arrays
    got = [fast.next_batch() for _ in range(60)]
    # the row-by-row path (what unpacked or randomly truncated batches take), row for row
    want = [{"input_ids": torch.from_numpy(np.stack([reference._next_row() for _ in range(128)]))}
            for _ in range(60)]
    assert fast.epoch == reference.epoch == 1
    assert _same_batches(got, want)
    assert len(fast.shuffle_buf) == BUFFER and all(isinstance(g, int) for g in fast.shuffle_buf)
    assert all(torch.equal(torch.from_numpy(reference.shuffle_buf[i]), torch.from_numpy(fast.source.get(g)))
               for i, g in enumerate(fast.shuffle_buf))
    assert fast.pack_buf.tolist() == reference.pack_buf.tolist()
    assert fast.rng.bit_generator.state == reference.rng.bit_generator.state


@pytest.mark.parametrize(("packing", "trunc"), [(True, 0.0), (True, 0.3), (False, 0.0)])
def test_index_buffer_resumes_exactly(tinystories_shards, packing, trunc):
    p = _producer(tinystories_shards, packing, trunc)
    for _ in range(5):
        p.next_batch()
    state = _roundtrip(p.state_dict())
    expected = [p.next_batch() for _ in range(20)]
    restored = _producer(tinystories_shards, packing, trunc, state=state)
    assert _same_batches(expected, [restored.next_batch() for _ in range(20)])
    assert ("attention_mask" in expected[0]) == (not packing or trunc > 0)


def test_index_buffer_resumes_exactly_through_workers(tinystories_shards, tok512):
    cfg = make_cfg('data.source="shards"', f'data.shards_dir="{tinystories_shards}"', "data.num_workers=2",
                   f"data.shuffle_buffer_size={BUFFER}")
    s = build_stream(cfg, tok512, "train")
    for _ in range(7):  # odd: the restored stream must start at the second worker
        next(s)
    state = _roundtrip(s.state_dict())
    expected = [next(s) for _ in range(6)]
    s.close()
    restored = build_stream(cfg, tok512, "train")
    restored.load_state_dict(state)
    got = [next(restored) for _ in range(6)]
    restored.close()
    assert _same_batches(expected, got)
    assert all(len(pickle.dumps(r)) < 16 * 1024 for r in state["readers"])


def test_state_of_a_full_buffer_is_small(tinystories_shards):
    p = _producer(tinystories_shards)
    p.next_batch()
    state = p.state_dict()
    assert len(state["shuffle_buf"]["docs"]) == BUFFER
    # the tokens of 1000 TinyStories documents would be ~1 MB
    assert len(pickle.dumps(state)) < 64 * 1024
    assert not any(isinstance(v, torch.Tensor) for v in state.values())  # nothing to share or pin per batch


def test_old_version_state_is_refused_clearly(tinystories_shards, tok512):
    p = _producer(tinystories_shards)
    p.next_batch()
    old = {**p.state_dict(), "version": 1}
    with pytest.raises(DataError, match=r"data state version 1 was saved by another diffusionlm version"):
        _producer(tinystories_shards, state=old)
    # with workers the stream refuses at load time, in the main process, not later inside a worker
    cfg = make_cfg('data.source="shards"', f'data.shards_dir="{tinystories_shards}"', "data.num_workers=2")
    s = build_stream(cfg, tok512, "train")
    stream_state = {**s.state_dict(), "readers": [old, None]}
    with pytest.raises(DataError, match=r"resume that checkpoint with the diffusionlm version that saved it"):
        s.load_state_dict(stream_state)


def test_index_state_is_refused_by_a_text_source(tinystories_shards, tok512):
    p = _producer(tinystories_shards)
    p.next_batch()
    spec = BatchSpec(16, 128, True, 0.0, BUFFER, 3, 0, 2, 200_000, 64)
    with pytest.raises(DataError, match=r"resume with the same data\.source"):
        BatchProducer(BuiltinSource(make_cfg().data), Selection("train", True, 20, 0, 1), tok512, spec,
                      p.state_dict())

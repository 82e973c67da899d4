"""Exact resume: batches N+1..2N of an uninterrupted stream == batches 1..N after restoring at N."""

import io
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffusionlm.data import DataError, build_stream
from tests.diffusionlm.data.conftest import make_cfg

N = 7  # odd, so with 2 workers the restored stream must start at the second worker


def _same(a, b):
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def _resume_check(cfg, tok, rank=0, world_size=1):
    s = build_stream(cfg, tok, "train", rank, world_size)
    first = [next(s) for _ in range(N)]
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)  # the trainer puts it in a checkpoint
    expected = [next(s) for _ in range(N)]
    s.close()
    buf.seek(0)
    restored = build_stream(cfg, tok, "train", rank, world_size)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    got = [next(restored) for _ in range(N)]
    restored.close()
    assert not _same(first, expected), "the stream must move on"
    assert _same(expected, got)


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume_with_shuffle(tok512, packing, num_workers):
    cfg = make_cfg(f"data.packing={str(packing).lower()}", f"data.num_workers={num_workers}",
                   "data.random_trunc_prob=0.3")
    _resume_check(cfg, tok512)


def test_exact_resume_across_epoch_boundary_on_rank_1(tok512):
    # 40 stories, 2 ranks: every rank's epoch is ~10 batches, so N=7 saves mid-epoch and resumes into the next
    cfg = make_cfg("data.builtin_num_stories=40", "data.batch_size=2")
    _resume_check(cfg, tok512, rank=1, world_size=2)


def test_resume_refuses_other_layout(tok512):
    s = build_stream(make_cfg("data.num_workers=0"), tok512, "train")
    next(s)
    other = build_stream(make_cfg("data.num_workers=2"), tok512, "train")
    with pytest.raises(DataError, match=r"data\.num_workers"):
        other.load_state_dict(s.state_dict())


def _gloo_worker(rank, world_size, port, result_dir, tok_json):
    from tokenizers import Tokenizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        cfg = make_cfg("data.packing=false", "model.context_length=512", "data.num_workers=0")
        s = build_stream(cfg, Tokenizer.from_str(tok_json), "train", rank, world_size)
        hashes = [hash(tuple(r.tolist())) for _ in range(10) for r in next(s)["input_ids"]]
        gathered = [None] * world_size
        dist.all_gather_object(gathered, hashes)
        if rank == 0:
            torch.save(gathered, os.path.join(result_dir, "hashes.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_read_disjoint_data(tok512, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_gloo_worker, args=(2, port, str(tmp_path), tok512.to_str()), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "hashes.pt")
    assert len(set(r0)) == len(r0) == 40 and len(set(r1)) == 40
    assert not set(r0) & set(r1)

import hashlib

import torch

from diffusionlm.data import build_stream, iter_texts
from diffusionlm.data.builtin_corpus import generate_story
from tests.diffusionlm.data.conftest import make_cfg


def _take(stream, n):
    return [next(stream) for _ in range(n)]


def test_packed_batches_shape_dtype_and_eos(tok512):
    s = build_stream(make_cfg(), tok512, "train")
    batches = _take(s, 5)
    for b in batches:
        assert set(b) == {"input_ids"}
        assert b["input_ids"].dtype == torch.int64 and b["input_ids"].shape == (4, 64)
    ids = torch.cat([b["input_ids"] for b in batches])
    assert (ids == 2).sum() > 0, "documents end in <eos>"
    assert not (ids == 0).any() and not (ids == 3).any(), "packing: no <pad>, and never <mask>"
    st = s.stats()
    assert st["data.tokens"] == 5 * 4 * 64 and st["data.tokens_per_s"] > 0 and st["data.wait_s"] > 0
    assert s.describe()["source"] == "builtin" and s.describe()["packing"] is True


def test_unpacked_rows_are_one_document_with_mask(tok512):
    s = build_stream(make_cfg("data.packing=false", "model.context_length=512", "inference.total_length=32",
                              "data.shuffle_buffer_size=0"), tok512, "train")
    b = next(s)
    mask = b["attention_mask"]
    assert mask.dtype == torch.bool and mask.shape == b["input_ids"].shape
    for row, m in zip(b["input_ids"], mask):
        n = int(m.sum())
        assert row[n - 1] == 2 and (row[n:] == 0).all() and (row[:n] != 0).all()
    # unshuffled, rows are the train documents in order (story 0, 1, ...; story 19 is validation)
    text = tok512.decode(b["input_ids"][0][: int(mask[0].sum()) - 1].tolist(), skip_special_tokens=False)
    assert text == generate_story(0, 0)


def test_random_trunc_with_packing_pads_the_tail(tok512):
    s = build_stream(make_cfg("data.random_trunc_prob=0.5"), tok512, "train")
    rows = torch.cat([b["input_ids"] for b in _take(s, 10)])
    masks = torch.cat([b["attention_mask"] for b in _take(build_stream(
        make_cfg("data.random_trunc_prob=0.5"), tok512, "train"), 10)])
    lengths = masks.sum(1)
    assert 0 < (lengths < 64).sum() < len(lengths), "about half the rows are shortened"
    for row, n in zip(rows, lengths):
        assert (row[n:] == 0).all() and (row[:n] != 0).all()


def test_val_is_deterministic_disjoint_and_held_out(tok512):
    cfg = make_cfg("data.packing=false", "model.context_length=512", "inference.total_length=32")
    v1 = _take(build_stream(cfg, tok512, "val"), 3)
    v2 = _take(build_stream(cfg, tok512, "val"), 3)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(v1, v2))
    val_texts = set(iter_texts(cfg, "val"))
    train_texts = set(iter_texts(cfg, "train"))
    assert len(val_texts) == 400 // 20 and len(train_texts) == 380 and not val_texts & train_texts
    first_val = tok512.decode(v1[0]["input_ids"][0][v1[0]["attention_mask"][0]][:-1].tolist())
    assert first_val == generate_story(0, 19)


def test_mask_text_in_documents_is_not_the_mask_token(tok512, tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a <mask> and <eos> and <pad> in text"}\n' * 30)
    cfg = make_cfg('data.source="files"', f'data.data_files=["{f}"]', "data.shuffle_buffer_size=0")
    ids = next(build_stream(cfg, tok512, "train"))["input_ids"]
    assert not (ids == 3).any() and not (ids == 0).any()
    assert (ids == 2).sum() >= 4  # only the real document ends


def test_epochs_wrap_and_are_counted(tok512):
    s = build_stream(make_cfg("data.builtin_num_stories=40", "data.shuffle_buffer_size=0"), tok512, "train")
    _take(s, 120)  # 38 train stories x ~250 tokens is ~37 batches per epoch
    assert s.stats()["data.epoch"] >= 2


def test_two_ranks_read_disjoint_documents(tok512):
    cfg = make_cfg("data.packing=false", "model.context_length=512", "inference.total_length=32")

    def rows(rank):
        s = build_stream(cfg, tok512, "train", rank=rank, world_size=2)
        out = set()
        for b in _take(s, 20):
            for r in b["input_ids"]:
                out.add(hashlib.sha1(r.numpy().tobytes()).hexdigest())
        return out

    r0, r1 = rows(0), rows(1)
    assert len(r0) == len(r1) == 80 and not r0 & r1

"""Run policy pieces that need no process group: disjoint data per rank, owner assignment, metrics
alignment on resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from config import load_config
from ddp.sharding import assign_owners
from diffusionlm.data import build_stream, iter_texts
from diffusionlm.data.selection import Selection
from diffusionlm.tokenizer import build_tokenizer
from diffusionlm.training.run_dir import truncate_metrics_after

N_DOCS, VAL_EVERY = 200, 20


@pytest.mark.parametrize("world_size", [2, 3])
def test_no_document_is_seen_by_two_ranks_in_one_epoch(tmp_path: Path, world_size: int) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i:05d} about a cat and a dog."}) + "\n"
                              for i in range(N_DOCS)))
    cfg = load_config(None, [
        "data.source=files", f"data.data_files=[\"{corpus}\"]", "data.packing=false", "data.batch_size=1",
        f"data.val_every={VAL_EVERY}", "model.vocab_size=512", "tokenizer.vocab_size=512", "model.context_length=32",
        "inference.total_length=32", f"tokenizer.train_docs={N_DOCS}",
        # a shuffle buffer larger than an epoch would mix the next epoch into this one's rows
        "data.shuffle_buffer_size=0",
    ])
    tok = build_tokenizer(cfg, iter_texts(cfg, "train"))
    seen: list[list[int]] = []
    for rank in range(world_size):
        # an epoch of this rank: the documents its slot owns (the stream itself does not say when it ends)
        per_epoch = sum(Selection("train", True, VAL_EVERY, rank, world_size).owns(g) for g in range(N_DOCS))
        stream = build_stream(cfg, tok, "train", rank=rank, world_size=world_size)
        try:
            rows = [tok.decode(next(stream)["input_ids"][0].tolist()) for _ in range(per_epoch)]
        finally:
            stream.close()
        seen.append([int(m) for row in rows for m in re.findall(r"document (\d{5})", row)])
    flat = [d for docs in seen for d in docs]
    assert len(flat) == len(set(flat)), "a document was read twice (by two ranks or twice by one)"
    train_docs = {g for g in range(N_DOCS) if g % VAL_EVERY != VAL_EVERY - 1}
    assert set(flat) == train_docs  # together the ranks cover the epoch exactly
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


def test_owner_assignment_is_deterministic_disjoint_and_balanced() -> None:
    sizes = [4096, 10, 4096, 32768, 12288, 12288, 64, 64, 24576, 300]
    owners = assign_owners(sizes, 3)
    assert owners == assign_owners(list(sizes), 3)
    loads = [sum(s for s, o in zip(sizes, owners) if o == r) for r in range(3)]
    assert sum(loads) == sum(sizes) and min(loads) > 0
    assert max(loads) <= sum(sizes) / 3 + max(sizes)  # greedy largest-first bound
    assert assign_owners(sizes, 1) == [0] * len(sizes)
    assert sorted(set(assign_owners([5, 5], 4))) == [0, 1]  # more ranks than parameters: some own nothing


def test_metrics_after_the_resumed_step_are_dropped_and_a_cut_line_too(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "metrics.loss": 1.0 / s}) for s in (10, 20, 20, 30, 40)]
    path.write_text("\n".join(lines) + '\n{"step": 50, "metr')  # the run died mid-write
    assert truncate_metrics_after(path, 20) == 3
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [10, 20, 20]
    assert truncate_metrics_after(path, 20) == 0  # idempotent
    assert truncate_metrics_after(tmp_path / "absent.jsonl", 5) == 0

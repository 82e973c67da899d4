"""One reader's batches: documents -> shuffle buffer -> rows (packed or one per document) -> batches.

Everything that decides the next batch lives in `state_dict()`: the source position and epoch, the
shuffle buffer, the packing remainder and the RNG. Restoring it continues the exact same sequence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffusionlm.data.documents import token_docs
from diffusionlm.data.errors import DataError
from diffusionlm.data.selection import Selection

STATE_VERSION = 1


@dataclass(frozen=True)
class BatchSpec:
    batch_size: int
    context_length: int
    packing: bool
    random_trunc_prob: float
    shuffle_buffer_size: int
    shuffle_seed: int
    pad_id: int
    eos_id: int
    max_doc_chars: int
    tokenize_batch_size: int

    @property
    def emits_mask(self) -> bool:
        return not self.packing or self.random_trunc_prob > 0


def _pack_arrays(arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    # One flat tensor + lengths instead of a list of tensors: cheap to pickle and to send between processes.
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.int64)
    flat = torch.from_numpy(np.concatenate(arrays)) if arrays else torch.zeros(0, dtype=torch.int64)
    return {"tokens": flat.to(torch.int32), "lengths": lengths}


def _unpack_arrays(packed: dict[str, torch.Tensor]) -> list[np.ndarray]:
    flat = packed["tokens"].numpy().astype(np.int64)
    return list(np.split(flat, np.cumsum(packed["lengths"].numpy())[:-1])) if len(packed["lengths"]) else []


class BatchProducer:
    def __init__(self, source: Any, sel: Selection, encoder: Any, spec: BatchSpec, state: dict | None = None):
        self.source, self.sel, self.encoder, self.spec = source, sel, encoder, spec
        seed_seq = np.random.SeedSequence([spec.shuffle_seed, sel.slot, sel.nslots, sel.split == "val"])
        self.rng = np.random.Generator(np.random.PCG64(seed_seq))
        self.epoch = self.pos = self.docs_in_epoch = 0
        self.skipped = self.truncated = self.docs = self.batches = 0
        self.shuffle_buf: list[np.ndarray] = []
        self.pack_buf = np.zeros(0, dtype=np.int64)
        if state is not None:
            self.load_state_dict(state)
        self._docs = self._doc_stream()

    # ----- documents, epochs wrapping forever
    def _doc_stream(self) -> Iterator[np.ndarray]:
        s = self.spec
        while True:
            for pos, tokens, truncated in token_docs(
                self.source, self.sel, self.pos, self.encoder, s.eos_id, s.max_doc_chars, s.tokenize_batch_size
            ):
                self.pos = pos
                if tokens is None:
                    self.skipped += 1
                    continue
                self.truncated += truncated
                self.docs += 1
                self.docs_in_epoch += 1
                yield tokens
            if self.docs_in_epoch == 0:
                raise DataError(
                    f"the {self.sel.split!r} split has no usable documents for reader {self.sel.slot} of "
                    f"{self.sel.nslots} (ranks x workers); use more data or fewer ranks/workers"
                )
            self.epoch, self.pos, self.docs_in_epoch = self.epoch + 1, 0, 0

    def _next_doc(self) -> np.ndarray:
        size = self.spec.shuffle_buffer_size
        while True:
            doc = next(self._docs)
            if size == 0:
                return doc
            if len(self.shuffle_buf) < size:
                self.shuffle_buf.append(doc)
                continue
            i = int(self.rng.integers(size))
            out, self.shuffle_buf[i] = self.shuffle_buf[i], doc
            return out

    # ----- rows and batches
    def _next_row(self) -> np.ndarray:
        T = self.spec.context_length
        if self.spec.packing:
            while len(self.pack_buf) < T:
                self.pack_buf = np.concatenate([self.pack_buf, self._next_doc()])
            row, self.pack_buf = self.pack_buf[:T], self.pack_buf[T:]
        else:
            row = self._next_doc()[:T]
        p = self.spec.random_trunc_prob
        if p > 0 and len(row) > 1 and self.rng.random() < p:
            row = row[: int(self.rng.integers(1, len(row)))]
        return row

    def next_batch(self) -> dict[str, torch.Tensor]:
        s = self.spec
        ids = np.full((s.batch_size, s.context_length), s.pad_id, dtype=np.int64)
        lengths = np.zeros(s.batch_size, dtype=np.int64)
        for b in range(s.batch_size):
            row = self._next_row()
            ids[b, : len(row)] = row
            lengths[b] = len(row)
        batch = {"input_ids": torch.from_numpy(ids)}
        if s.emits_mask:
            batch["attention_mask"] = torch.from_numpy(np.arange(s.context_length)[None, :] < lengths[:, None])
        self.batches += 1
        return batch

    # ----- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "slot": self.sel.slot, "nslots": self.sel.nslots,
            "epoch": self.epoch, "pos": self.pos, "docs_in_epoch": self.docs_in_epoch,
            "rng": self.rng.bit_generator.state, "shuffle_buf": _pack_arrays(self.shuffle_buf),
            "pack_buf": torch.from_numpy(self.pack_buf.copy()),
            "skipped": self.skipped, "truncated": self.truncated, "docs": self.docs, "batches": self.batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise DataError(f"data state version {state.get('version')} is not {STATE_VERSION}")
        if (state["slot"], state["nslots"]) != (self.sel.slot, self.sel.nslots):
            raise DataError(
                f"data state was saved by reader {state['slot']} of {state['nslots']}, this is reader "
                f"{self.sel.slot} of {self.sel.nslots}: resume with the same ranks and data.num_workers"
            )
        self.epoch, self.pos, self.docs_in_epoch = state["epoch"], state["pos"], state["docs_in_epoch"]
        self.rng.bit_generator.state = state["rng"]
        self.shuffle_buf = _unpack_arrays(state["shuffle_buf"])
        self.pack_buf = state["pack_buf"].numpy().astype(np.int64)
        self.skipped, self.truncated = state["skipped"], state["truncated"]
        self.docs, self.batches = state["docs"], state["batches"]
        self._docs = self._doc_stream()

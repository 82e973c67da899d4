"""One reader's batches: documents -> shuffle buffer -> rows (packed or one per document) -> batches.

Everything that decides the next batch lives in `state_dict()`: the source position and epoch, the
shuffle buffer, the packing remainder and the RNG. Restoring it continues the exact same sequence.

For pre-tokenized random-access sources (shards) the shuffle buffer holds global document indices and
tokens are read only when a document leaves it: with DataLoader workers every batch carries its reader's
state to the main process, so the state must stay a few KB rather than the buffer's tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffusionlm.data.documents import owned_indices, token_docs
from diffusionlm.data.errors import DataError
from diffusionlm.data.selection import Selection

STATE_VERSION = 2  # 2: shards keep document indices, not tokens, in the shuffle buffer


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


def check_state_version(state: dict[str, Any]) -> None:
    version = state.get("version")
    if version != STATE_VERSION:
        raise DataError(
            f"data state version {version} was saved by another diffusionlm version (this one reads version "
            f"{STATE_VERSION}; the shuffle buffer format changed), so it cannot continue the same batches: resume "
            "that checkpoint with the diffusionlm version that saved it, or start a new run"
        )


class BatchProducer:
    def __init__(self, source: Any, sel: Selection, encoder: Any, spec: BatchSpec, state: dict | None = None):
        self.source, self.sel, self.encoder, self.spec = source, sel, encoder, spec
        seed_seq = np.random.SeedSequence([spec.shuffle_seed, sel.slot, sel.nslots, sel.split == "val"])
        self.rng = np.random.Generator(np.random.PCG64(seed_seq))
        self.epoch = self.pos = self.docs_in_epoch = 0
        self.skipped = self.truncated = self.docs = self.batches = 0
        # Tokens are re-read cheaply by index only from pre-tokenized random-access sources.
        self.by_ref = bool(source.random_access and not source.text)
        self.shuffle_buf: list[Any] = []  # global document indices when by_ref, else token arrays
        self.pack_buf = np.zeros(0, dtype=np.int64)
        if state is not None:
            self.load_state_dict(state)
        self._docs = self._doc_stream()

    # ----- documents, epochs wrapping forever
    def _epoch_docs(self) -> Iterator[tuple[int, Any, bool]]:
        """(pos_after, document, truncated) from the resume position to the end of the epoch."""
        if self.by_ref:
            return ((pos, g, False) for pos, g in owned_indices(self.source, self.sel, self.pos))
        s = self.spec
        return token_docs(
            self.source, self.sel, self.pos, self.encoder, s.eos_id, s.max_doc_chars, s.tokenize_batch_size
        )

    def _doc_stream(self) -> Iterator[Any]:
        while True:
            for pos, tokens, truncated in self._epoch_docs():
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
                return self._tokens(doc)
            if len(self.shuffle_buf) < size:
                self.shuffle_buf.append(doc)
                continue
            i = int(self.rng.integers(size))
            out, self.shuffle_buf[i] = self.shuffle_buf[i], doc
            return self._tokens(out)

    def _tokens(self, doc: Any) -> np.ndarray:
        return self.source.get(doc) if self.by_ref else doc

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

    def _packed_batch(self) -> np.ndarray:
        """All rows at once: with packing and no random truncation, rows are consecutive slices of the
        document stream, so one concatenate gives exactly what `_next_row` would, row after row."""
        s = self.spec
        need = s.batch_size * s.context_length
        pieces, have = [self.pack_buf], len(self.pack_buf)
        while have < need:  # the same documents `_next_row` would read: it also stops at the first that suffices
            doc = self._next_doc()
            pieces.append(doc)
            have += len(doc)
        flat = np.concatenate(pieces)
        self.pack_buf = flat[need:].copy()  # a copy, so the batch does not keep the remainder's memory alive
        return flat[:need].reshape(s.batch_size, s.context_length)

    def next_batch(self) -> dict[str, torch.Tensor]:
        s = self.spec
        if s.packing and s.random_trunc_prob == 0:
            self.batches += 1
            return {"input_ids": torch.from_numpy(self._packed_batch())}
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
            "rng": self.rng.bit_generator.state, "shuffle_buf": self._buffer_state(),
            "pack_buf": self.pack_buf.tolist(),  # under one document: a list pickles small, no tensor to share
            "skipped": self.skipped, "truncated": self.truncated, "docs": self.docs, "batches": self.batches,
        }

    def _buffer_state(self) -> dict[str, Any]:
        if self.by_ref:  # a plain list: small to pickle, and no tensor to share or pin per batch
            return {"kind": "refs", "docs": [int(g) for g in self.shuffle_buf]}
        return {"kind": "tokens", **_pack_arrays(self.shuffle_buf)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_version(state)
        if (state["slot"], state["nslots"]) != (self.sel.slot, self.sel.nslots):
            raise DataError(
                f"data state was saved by reader {state['slot']} of {state['nslots']}, this is reader "
                f"{self.sel.slot} of {self.sel.nslots}: resume with the same ranks and data.num_workers"
            )
        self.epoch, self.pos, self.docs_in_epoch = state["epoch"], state["pos"], state["docs_in_epoch"]
        self.rng.bit_generator.state = state["rng"]
        buf = state["shuffle_buf"]
        kind = "refs" if self.by_ref else "tokens"
        if buf["kind"] != kind:
            raise DataError(
                f"data state holds a shuffle buffer of {buf['kind']} but this source needs {kind}: "
                "resume with the same data.source"
            )
        self.shuffle_buf = list(buf["docs"]) if self.by_ref else _unpack_arrays(buf)
        self.pack_buf = np.asarray(state["pack_buf"], dtype=np.int64)
        self.skipped, self.truncated = state["skipped"], state["truncated"]
        self.docs, self.batches = state["docs"], state["batches"]
        self._docs = self._doc_stream()

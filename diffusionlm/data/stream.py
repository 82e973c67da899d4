"""`TokenStream`: the trainer-facing iterator of fixed-shape token batches with exact resume.

Each rank runs `max(1, num_workers)` readers (slots `rank * readers + w` of `world_size * readers`),
each owning a disjoint part of the documents. With workers, every batch travels with its reader's
state after that batch, and DataLoader hands batches out round-robin in worker order; so the main
process knows, for the batches actually consumed, every reader's state and which reader is next.
On resume each reader restarts from its state, and the worker order is rotated so the reader that
was next comes first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import torch

from diffusionlm.data.errors import DataError
from diffusionlm.data.producer import BatchProducer, BatchSpec, check_state_version
from diffusionlm.data.selection import Selection

STREAM_STATE_VERSION = 1


class _ReaderDataset(torch.utils.data.IterableDataset):
    """What a DataLoader worker runs: the reader assigned to it, yielding (batch, reader, state)."""

    def __init__(self, source: Any, sels: list[Selection], encoder: Any, spec: BatchSpec,
                 states: list[dict | None], rotation: int):
        self.source, self.sels, self.encoder, self.spec = source, sels, encoder, spec
        self.states, self.rotation = states, rotation

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], int, dict]]:
        info = torch.utils.data.get_worker_info()
        reader = (info.id + self.rotation) % len(self.sels)
        producer = BatchProducer(self.source, self.sels[reader], self.encoder, self.spec, self.states[reader])
        while True:
            batch = producer.next_batch()
            yield batch, reader, producer.state_dict()


class TokenStream:
    """Infinite iterator of `{"input_ids": int64 [B, T]}` (+ `"attention_mask": bool [B, T]`) batches."""

    def __init__(self, source: Any, spec: BatchSpec, split: str, holdout: bool, val_every: int,
                 rank: int, world_size: int, num_workers: int, encoder: Any, pin_memory: bool,
                 description: dict[str, Any]):
        self.source, self.spec, self.split = source, spec, split
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.encoder, self.pin_memory = encoder, pin_memory
        self.num_readers = max(1, num_workers)
        self.sels = [
            Selection(split, holdout, val_every, rank * self.num_readers + w, world_size * self.num_readers)
            for w in range(self.num_readers)
        ]
        self._description = description
        self._states: list[dict | None] = [None] * self.num_readers
        self._next_reader = 0
        self._producer: BatchProducer | None = None
        self._loader_iter: Any = None
        self._tokens = 0
        self._wait_s = 0.0
        self._t_start: float | None = None

    # ----- iteration
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        if self._t_start is None:
            self._t_start = t0
        if self.num_workers == 0:
            if self._producer is None:
                self._producer = BatchProducer(self.source, self.sels[0], self.encoder, self.spec, self._states[0])
            batch = self._producer.next_batch()
            if self.pin_memory:
                batch = {k: v.pin_memory() for k, v in batch.items()}
        else:
            if self._loader_iter is None:
                self._start_workers()
            batch, reader, state = next(self._loader_iter)
            if reader != self._next_reader:  # would silently break exact resume, so never ignore it
                raise RuntimeError(f"data worker order broke: got reader {reader}, expected {self._next_reader}")
            self._states[reader] = state
            self._next_reader = (reader + 1) % self.num_readers
        self._wait_s += time.perf_counter() - t0
        self._tokens += batch["input_ids"].numel()
        return batch

    def _start_workers(self) -> None:
        # Workers are forked; the parent's Rust thread pool must not be inherited mid-use.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        dataset = _ReaderDataset(self.source, self.sels, self.encoder, self.spec, self._states, self._next_reader)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory, prefetch_factor=2
        )
        self._loader_iter = iter(loader)

    def close(self) -> None:
        if self._loader_iter is not None:
            shutdown = getattr(self._loader_iter, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self._loader_iter = None

    def __del__(self) -> None:
        self.close()

    # ----- resume
    def state_dict(self) -> dict[str, Any]:
        states = list(self._states)
        if self._producer is not None:
            states[0] = self._producer.state_dict()
        return {"version": STREAM_STATE_VERSION, "split": self.split, "rank": self.rank,
                "world_size": self.world_size, "num_readers": self.num_readers,
                "next_reader": self._next_reader, "readers": states}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STREAM_STATE_VERSION:
            raise DataError(f"data stream state version {state.get('version')} is not {STREAM_STATE_VERSION}")
        saved = (state["split"], state["rank"], state["world_size"], state["num_readers"])
        here = (self.split, self.rank, self.world_size, self.num_readers)
        if saved != here:
            raise DataError(
                f"data state (split, rank, world_size, readers) = {saved} does not match this stream {here}; "
                "resume with the same number of ranks and data.num_workers"
            )
        for reader_state in state["readers"]:  # here, not later inside a worker where the error reads badly
            if reader_state is not None:
                check_state_version(reader_state)
        self.close()
        self._producer = None
        self._states = list(state["readers"])
        self._next_reader = state["next_reader"]

    # ----- instrumentation
    def stats(self) -> dict[str, float]:
        states = list(self._states)
        if self._producer is not None:
            states[0] = self._producer.state_dict()
        live = [s for s in states if s is not None]
        elapsed = time.perf_counter() - self._t_start if self._t_start is not None else 0.0
        return {
            "data.skipped_rows": float(sum(s["skipped"] for s in live)),
            "data.truncated_rows": float(sum(s["truncated"] for s in live)),
            "data.tokens": float(self._tokens),
            "data.tokens_per_s": self._tokens / elapsed if elapsed > 0 else 0.0,
            "data.wait_s": self._wait_s,
            "data.epoch": float(max((s["epoch"] for s in live), default=0)),
        }

    def describe(self) -> dict[str, Any]:
        return dict(self._description)

"""Which documents of a source one reader owns: the split (with a deterministic holdout when the source
has no validation split) and the reader's slot among all ranks x workers.

Every decision is a pure function of the global document index, so ranks and workers never overlap,
never coordinate, and a restored position means the same documents again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Selection:
    split: str  # "train" | "val"
    holdout: bool  # True: every `val_every`-th document of the stream is validation, the rest train
    val_every: int
    slot: int
    nslots: int

    def _rank_in_split(self, g: int) -> int | None:
        """Index of document g among the documents of this split, or None when g is in the other one."""
        if not self.holdout:
            return g
        is_val = g % self.val_every == self.val_every - 1
        if self.split == "val":
            return g // self.val_every if is_val else None
        return None if is_val else g - (g + 1) // self.val_every

    def owns(self, g: int) -> bool:
        k = self._rank_in_split(g)
        return k is not None and k % self.nslots == self.slot

    def nth(self, j: int) -> int:
        """Global index of the j-th document this reader owns (for random-access sources)."""
        k = self.slot + j * self.nslots
        if not self.holdout:
            return k
        if self.split == "val":
            return k * self.val_every + self.val_every - 1
        return k + k // (self.val_every - 1)

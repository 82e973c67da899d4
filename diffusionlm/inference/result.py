"""What a generation returns: the token ids, which positions were given, and rows cut at `<eos>`."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Generation:
    ids: torch.Tensor  # int64 [B, L], no <mask> left
    given: list[bool]  # [L]: the template's given (never changed) positions
    eos_token_id: int
    steps: int  # denoising steps taken
    model_calls: int  # network evaluations (fewer than steps when the ancestral cache or threshold saves some)

    def rows(self, stop_at_eos: bool = True) -> list[list[int]]:
        """Each row's ids. With stop_at_eos, a generated span ends at its first generated `<eos>`: that token and
        the rest of the span are dropped (given tokens are always kept; for a prompt continued to a length, the
        text after the first generated `<eos>`)."""
        out = []
        for row in self.ids.tolist():
            if not stop_at_eos:
                out.append(row)
                continue
            kept, ended = [], False
            for tok, given in zip(row, self.given):
                if given:
                    kept.append(tok)
                    ended = False
                elif not ended:
                    ended = tok == self.eos_token_id
                    if not ended:
                        kept.append(tok)
            out.append(kept)
        return out

    def generated_lengths(self, stop_at_eos: bool = True) -> list[int]:
        """Tokens each row generated (after cutting at `<eos>` when stop_at_eos)."""
        n_given = sum(self.given)
        return [len(r) - n_given for r in self.rows(stop_at_eos)]

"""The plan of a generation: which masked positions form each semi-autoregressive block, how many steps each
block gets and how many tokens each of its steps reveals. Host-side integers, fixed before the loop starts."""

from __future__ import annotations

from dataclasses import dataclass


def tokens_per_step(n_masked: int, steps: int) -> list[int]:
    """Spread n_masked reveals over `steps` steps as evenly as possible (earlier steps get the remainder)."""
    steps = max(1, min(steps, n_masked)) if n_masked else 1
    base, extra = divmod(n_masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


@dataclass(frozen=True)
class Block:
    positions: list[int]  # the block's masked positions in the template, ascending
    steps: int  # the block's share of the steps (ancestral's time grid)
    reveals: list[int]  # tokens committed at each step (fixed-count strategies): at most one step a position


def plan_blocks(masked_positions: list[int], steps: int, block_length: int) -> list[Block]:
    """Cut the generated region into blocks of `block_length` positions, counted from the first masked position
    (0: one block), keep the blocks that hold masked positions, and share `steps` among them evenly (every block
    gets at least one step, so there are more steps than asked for when there are more blocks than steps)."""
    if not masked_positions:
        return []
    first = masked_positions[0]
    groups: dict[int, list[int]] = {}
    for p in masked_positions:
        groups.setdefault((p - first) // block_length if block_length > 0 else 0, []).append(p)
    shares = tokens_per_step(steps, len(groups)) if steps >= len(groups) else [1] * len(groups)
    blocks = []
    for (_, positions), share in zip(sorted(groups.items()), shares):
        reveals = tokens_per_step(len(positions), share)
        blocks.append(Block(positions, share, reveals))
    return blocks

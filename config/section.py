"""The base of every config section: unknown keys are errors, assignments are validated, and no number may be
infinite or NaN unless its field says so (optimizer.grad_clip = inf means no clipping)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

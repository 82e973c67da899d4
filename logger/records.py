"""Turns a metrics dict into one JSON line that always parses (NaN/inf become strings)."""

from __future__ import annotations

import json
import math
from typing import Any

SIGNIFICANT_DIGITS = 6


def clean_value(value: Any) -> Any:
    """A JSON-safe, compactly rounded version of one metric value.

    Floats keep 6 significant digits; non-finite floats become "nan"/"inf"/"-inf" because bare NaN is not
    valid JSON and would break every downstream reader. numpy/torch scalars are unwrapped via `.item()`.
    """
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"metric value of type {type(value).__name__} is not a number: {value!r}")


def make_record(metrics: dict[str, Any], step: int, elapsed_s: float) -> dict[str, Any]:
    record: dict[str, Any] = {"step": int(step), "elapsed_s": round(elapsed_s, 3)}
    for key, value in metrics.items():
        if key in record:
            raise ValueError(f"metric key {key!r} collides with a reserved field")
        record[key] = clean_value(value)
    return record


def to_json_line(record: dict[str, Any]) -> str:
    # allow_nan=False: a NaN that slipped past clean_value must fail loudly, never write invalid JSON.
    return json.dumps(record, allow_nan=False, separators=(", ", ": "))

from __future__ import annotations

import io

import pytest

from logger import make_progress
from logger.progress import NullProgress, PlainProgress, RichProgress


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drive(progress, total: int) -> None:
    for step in range(1, total + 1):
        progress.update(step, loss=1.0 / step, tok_s=1234)
    progress.close()


def test_auto_on_a_pipe_and_off_add_nothing():
    for enabled, stream in (("auto", io.StringIO()), ("off", _FakeTerminal())):
        progress = make_progress(100, enabled, stream=stream)
        assert isinstance(progress, NullProgress)
        _drive(progress, 100)
        assert stream.getvalue() == ""


def test_plain_prints_periodic_lines():
    stream = io.StringIO()
    progress = make_progress(100, "plain", start=0, stream=stream)
    assert isinstance(progress, PlainProgress)
    _drive(progress, 100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20  # every 5%: steps 5, 10, ..., 100
    assert lines[-1].startswith("step 100/100 (100%)") and "loss=0.01" in lines[-1] and "tok_s=1234" in lines[-1]


def test_auto_on_a_terminal_and_on_give_the_rich_bar():
    for enabled, stream in (("auto", _FakeTerminal()), ("on", io.StringIO())):
        progress = make_progress(50, enabled, start=10, stream=stream)
        assert isinstance(progress, RichProgress)
        _drive(progress, 50)
        text = stream.getvalue()
        assert "50/50" in text and "loss=" in text


def test_bad_setting_is_rejected():
    with pytest.raises(ValueError, match="auto, on or off"):
        make_progress(10, "yes")

"""StopRequests with real signals sent to this process."""

from __future__ import annotations

import os
import signal

import pytest

from diffusionlm.training.stopping import StopRequests


def test_one_process_stops_at_once_and_a_second_signal_interrupts() -> None:
    logged: list[str] = []
    stop = StopRequests(1, logged.append)
    before = signal.getsignal(signal.SIGTERM)
    stop.install()
    try:
        assert stop.flag == 0.0 and stop.agreed is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM and stop.agreed == signal.SIGTERM and stop.flag == 1.0
        assert "received signal" in logged[0]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_rank_votes_but_stops_only_when_the_ranks_agree() -> None:
    stop = StopRequests(4, lambda _m: None)
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert stop.flag == 1.0 and stop.agreed is None  # its vote travels with the next step's statistics
    stop.agree()
    assert stop.agreed == signal.SIGINT
    other = StopRequests(4, lambda _m: None)  # a rank that received nothing, told by the reduced flag
    other.agree()
    assert other.agreed == signal.SIGTERM and other.flag == 0.0

"""The event hub: every observer sees every event, and a failing observer fails nothing else."""

from __future__ import annotations

import logging

import pytest

from crewline.observe import Event, Observers, TriggerEvent


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    def observe(self, event: Event) -> None:
        self.seen.append(event)


class Broken:
    def observe(self, event: Event) -> None:
        raise RuntimeError("observer bug")


def test_every_observer_sees_every_event_even_after_one_fails(caplog: pytest.LogCaptureFixture) -> None:
    hub = Observers()
    assert not hub
    first, last = Recorder(), Recorder()
    for observer in (first, Broken(), last):
        hub.add(observer)
    event = TriggerEvent("cron:digest", ok=True, at=1.0)
    with caplog.at_level(logging.ERROR, logger="crewline.observe"):
        hub.emit(event)
    assert first.seen == [event] and last.seen == [event]
    assert "Broken failed on TriggerEvent" in caplog.text
    hub.remove(last)
    hub.emit(event)
    assert len(last.seen) == 1 and len(first.seen) == 2

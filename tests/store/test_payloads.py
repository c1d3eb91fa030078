"""The one limit on how deeply payloads nest, shared by every entrance and by the writer."""

from __future__ import annotations

from typing import Any

import pytest

from crewline.errors import InvalidInput
from crewline.store.payloads import MAX_DEPTH, check_depth, dump, load_json, parse_json


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_the_writer_accepts_the_limit_and_the_reader_reads_it_back() -> None:
    value = nested(MAX_DEPTH)
    assert load_json(dump(value)) == value
    check_depth({"a": value[0]})


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 230, 100_000])
def test_the_writer_refuses_what_the_reader_could_not_read(depth: int) -> None:
    with pytest.raises(InvalidInput, match=f"step output is nested more than {MAX_DEPTH} levels"):
        dump(nested(depth), "step output")


def test_dicts_count_towards_depth() -> None:
    value: Any = 1
    for _ in range(MAX_DEPTH + 1):
        value = {"k": value}
    with pytest.raises(InvalidInput, match="event payload is nested"):
        check_depth(value, "event payload")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, f"nested more than {MAX_DEPTH} levels deep"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} levels"),
        ("1" + "0" * 5000, "number out of range"),
        (b"\xff", "expected value"),
        ('{"a": ', "EOF"),
    ],
)
def test_untrusted_json_is_refused_with_a_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match="request body is") as caught:
        parse_json(raw)
    assert reason.lower() in str(caught.value).lower()

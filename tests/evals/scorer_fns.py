"""Python scorers named as ``python:tests.evals.scorer_fns:NAME`` by the tests."""

from __future__ import annotations

from typing import Any


def shorter_than_ten(output: Any, expected: Any, input: Any) -> tuple[float, str]:
    return (1.0 if len(str(output)) < 10 else 0.0, "length")


def explodes(output: Any, expected: Any, input: Any) -> bool:
    raise RuntimeError("the scorer broke")

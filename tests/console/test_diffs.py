"""Side-by-side diffs: text line by line, other values as indented JSON with sorted keys."""

from __future__ import annotations

from crewline.console.diffs import side_by_side


def test_text_lines_pair_up_as_same_changed_added_and_removed() -> None:
    rows = side_by_side("a\nb\nc\n", "a\nB\nc\nd\n")
    assert [(r.change, r.old_no, r.old, r.new_no, r.new) for r in rows] == [
        ("same", 1, "a", 1, "a"),
        ("changed", 2, "b", 2, "B"),
        ("same", 3, "c", 3, "c"),
        ("added", None, "", 4, "d"),
    ]
    assert [r.change for r in side_by_side("x\ny\n", "x\n")] == ["same", "removed"]


def test_values_compare_field_by_field_whatever_their_key_order() -> None:
    rows = side_by_side({"to": "ada", "body": "Hi"}, {"body": "Hello", "to": "ada"})
    assert [r.change for r in rows if r.change != "same"] == ["changed"]
    changed = next(r for r in rows if r.change == "changed")
    assert (changed.old.strip(), changed.new.strip()) == ('"body": "Hi",', '"body": "Hello",')

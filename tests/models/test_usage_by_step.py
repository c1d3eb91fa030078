"""Model usage per step of a run, whole or one page of its timeline, on SQLite and PostgreSQL."""

from __future__ import annotations

from crewline.models.call_log import CallRecord, insert_record
from crewline.models.reports import usage_by_step
from crewline.models.types import Usage
from crewline.store import open_database


def test_usage_of_a_page_of_steps_is_that_of_those_steps_only(db_url: str) -> None:
    db = open_database(db_url)
    try:

        def write(conn: object) -> None:
            for step in range(1, 8):
                for _ in range(2 if step == 3 else 1):  # step 3 was called twice (a retry)
                    usage = Usage(input_tokens=10 * step, output_tokens=step)
                    record = CallRecord("p/m", run_id="r1", step=step, usage=usage, cost=0.5)
                    insert_record(conn, record, 4096, False)  # type: ignore[arg-type]
            insert_record(conn, CallRecord("p/m", run_id="r2", step=3, cost=9.0), 4096, False)  # type: ignore[arg-type]

        db.run(write)
        whole = db.query(lambda conn: usage_by_step(conn, "r1"))
        page = db.query(lambda conn: usage_by_step(conn, "r1", (3, 5)))
    finally:
        db.close()
    assert sorted(whole) == [1, 2, 3, 4, 5, 6, 7]
    assert sorted(page) == [3, 4, 5]
    assert page == {n: whole[n] for n in (3, 4, 5)}
    assert page[3]["calls"] == 2 and page[3]["cost"] == 1.0

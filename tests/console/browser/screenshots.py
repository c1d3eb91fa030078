"""The README's console screenshots: ``python -m tests.console.browser.screenshots`` rewrites
``docs/images/console-overview.png`` and ``docs/images/console-review.png``.

It serves the browser tests' project (a scripted, priced model) in a scratch directory, gives it a week
of model calls and a morning's runs (some approved, one rejected, a few waiting), signs in as an admin in
Debian's chromium and photographs the overview and a review waiting. Nothing is read from the network.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from crewline.models.call_log import CallRecord, insert_record
from crewline.models.types import Usage
from crewline.store import open_database

from .conftest import ROOT, Server, launched, make_project, running, sign_in

IMAGES = ROOT / "docs" / "images"
MODELS = (("openai", "gpt-4o-mini", 0.15, 0.6), ("anthropic", "claude-sonnet-4-5", 3.0, 15.0))
EMAILS = [
    ("ada@example.com", "Refund for order 1042?"),
    ("grace@example.org", "Invoice 2026-311 is wrong"),
    ("linus@example.net", "Can I change my plan?"),
    ("margaret@example.com", "Delivery to a new address"),
    ("alan@example.org", "Cancel my subscription"),
]


def a_week_of_calls(db_url: str, now: float) -> None:
    """Model calls over the past seven days, busier in working hours, for the charts to show."""
    rng = random.Random(3)
    db = open_database(db_url)

    def write(conn: object) -> None:
        for hour in range(7 * 24, 0, -1):
            busy = 9 <= time.gmtime(now - hour * 3600).tm_hour <= 18
            for _ in range(rng.randrange(8, 30) if busy else rng.randrange(0, 5)):
                provider, model, price_in, price_out = rng.choice(MODELS)
                tokens = Usage(input_tokens=rng.randrange(300, 3000), output_tokens=rng.randrange(50, 600))
                cost = (tokens.input_tokens * price_in + tokens.output_tokens * price_out) / 1e6
                at = now - hour * 3600 + rng.random() * 3600
                record = CallRecord(
                    f"{provider}/{model}",
                    started_at=at,
                    workflow=rng.choice(["answer", "digest"]),
                    provider=provider,
                    model=model,
                    usage=tokens,
                    cost=cost,
                    latency_ms=rng.lognormvariate(6.3, 0.4) * (3 if "sonnet" in model else 1),
                )
                insert_record(conn, record, 4096, False)  # type: ignore[arg-type]

    try:
        db.run(write)
    finally:
        db.close()


def a_morning(server: Server) -> str:
    """Runs of both workflows: three replies approved, one rejected, the rest waiting; a review id."""
    runs = [server.start("answer", {"sender": s, "subject": t, "body": "..."}) for s, t in EMAILS]
    for topic in ("sales", "support", "billing"):
        server.wait_status(server.start("digest", topic), "completed")
    reviews = [server.pending_review(run) for run in runs]
    for review, decision in zip(reviews[:2], ("approve", "reject"), strict=False):
        comment = "Say when the refund lands." if decision == "reject" else None
        body = {"decision": decision, "comment": comment}
        assert server.api.post(f"/api/v1/reviews/{review}/decision", json=body).status_code == 200
    return reviews[2]


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db_url, tokens = make_project(root)
        a_week_of_calls(db_url, time.time())
        with running(root, db_url, tokens) as server, launched() as browser:
            waiting = a_morning(server)
            page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme="light")
            sign_in(page, server, "admin")
            page.wait_for_selector("[data-chart] canvas")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(IMAGES / "console-overview.png"), full_page=True)
            page.goto(f"{server.url}/reviews/{waiting.replace(':', '%3A')}")
            page.wait_for_load_state("networkidle")
            page.get_by_text("Edit, then approve").click()
            page.screenshot(path=str(IMAGES / "console-review.png"), full_page=True)
    for name in ("console-overview.png", "console-review.png"):
        print(f"wrote {(IMAGES / name).relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""What each model really bills for its input, learned from the calls that billed more than reserved.

A budget reservation holds :func:`~crewline.models.tokens.input_token_ceiling` input tokens, which no
tokenizer exceeds on the text alone. A provider can still bill more than any count of the request's
text: a system prompt it adds unseen, a tool-use preamble longer than the ceiling allows. When a call
reports more input tokens than its reservation held, that is a miss: the difference still counts (the
call settles at what it cost), the miss is recorded here with the factor that would have covered it, and
every later reservation for that model is multiplied by the factor, in this process at once and in
others within :data:`REFRESH` seconds (they read the table again when their copy is that old).

This module alone issues SQL on ``model_input_factors``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from ..store import Conn, Database

__all__ = ["MARGIN", "REFRESH", "InputCalibration"]

log = logging.getLogger("crewline.models")

REFRESH = 30.0
# A miss raises the factor a little past the ratio seen, so the next call of the same shape is covered.
MARGIN = 1.1


class InputCalibration:
    """Per-model factors over the input-token ceiling; 1.0 for a model that never billed past it."""

    def __init__(self, db: Database | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._clock = clock
        self._factors: dict[str, float] = {}
        self._loaded = -math.inf
        self._loading: asyncio.Future[None] | None = None
        self._first_load = True  # no read has succeeded yet: calls wait for one

    async def factors(self) -> dict[str, float]:
        """The factors by model (``provider/model``), read again when older than :data:`REFRESH`.

        Only the first read is waited for. Later ones go on in the background while calls reserve on the
        copy they refresh: a copy is up to :data:`REFRESH` seconds old anyway, and waiting for each
        refresh would stall every budgeted call arriving meanwhile, every :data:`REFRESH` seconds."""
        if self._loading is None and self._db is not None and self._clock() - self._loaded >= REFRESH:
            self._loaded = self._clock()
            self._loading = asyncio.ensure_future(self._load(self._db))
            self._loading.add_done_callback(self._loaded_once)
        if self._loading is not None and self._first_load:
            await asyncio.shield(self._loading)
        return self._factors

    def _loaded_once(self, loading: asyncio.Future[None]) -> None:
        if self._loading is loading:
            self._loading = None
        if loading.cancelled():
            return
        if loading.exception() is None:
            self._first_load = False
        elif not self._first_load:  # the first read's error reaches the calls waiting for it
            log.warning("could not read the learned input factors: %s", loading.exception())

    async def _load(self, db: Database) -> None:
        rows = await db.read(lambda conn: conn.all("SELECT model, factor FROM model_input_factors", ()))
        for model, factor in rows:
            self._factors[model] = max(float(factor), self._factors.get(model, 1.0))

    def tokens(self, model: str, ceiling: int) -> int:
        """The input tokens to reserve for ``model`` on a request whose ceiling is ``ceiling``."""
        return math.ceil(ceiling * self._factors.get(model, 1.0))

    def missed(self, model: str, ceiling: int, reserved: int, reported: int) -> float | None:
        """``reported`` input tokens against the ``reserved`` ones (``ceiling`` before the factor): the new
        factor when that is a miss, else None. Calls reserved before an earlier miss was learned miss too:
        the factor only grows to cover the largest ratio, it does not compound."""
        if reported <= reserved or ceiling <= 0:
            return None
        factor = max(self._factors.get(model, 1.0), reported / ceiling * MARGIN)
        self._factors[model] = factor
        log.warning(
            "%s billed %d input tokens where %d were reserved: later reservations for it are %.2fx",
            model,
            reported,
            reserved,
            factor,
        )
        return factor

    @staticmethod
    def record_in(conn: Conn, model: str, factor: float, when: float) -> None:
        """Record a miss in the call's settling transaction (the larger factor wins across processes)."""
        conn.execute(
            "INSERT INTO model_input_factors (model, factor, misses, updated_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (model) DO UPDATE SET factor = CASE WHEN excluded.factor > model_input_factors.factor "
            "THEN excluded.factor ELSE model_input_factors.factor END, "
            "misses = model_input_factors.misses + 1, updated_at = excluded.updated_at",
            (model, factor, when),
        )

    @staticmethod
    def misses(conn: Conn) -> dict[str, tuple[float, int]]:
        """Each model's factor and how many misses taught it."""
        rows = conn.all("SELECT model, factor, misses FROM model_input_factors ORDER BY model", ())
        return {model: (float(factor), int(count)) for model, factor, count in rows}

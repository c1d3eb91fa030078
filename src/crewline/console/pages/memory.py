"""``/memory``: scopes with their counts, hybrid search with each hit's scores, a scope's items,
snapshots and history, an item's versions, and rolling a scope back to a snapshot (after a confirmation,
operators and admins only).

Everything goes through the app's :class:`~crewline.memory.MemoryStore`, as ``crewline memory`` does; a
rollback is recorded as written by the signed-in key.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ...errors import CrewlineError, InvalidInput
from ...memory.scopes import validate_scope
from ..web import NavEntry, PageError, Viewer, change, console_of, page, render
from ._formats import FMT

__all__ = ["NAV", "router"]

NAV = (NavEntry(70, "Memory", "/memory", "read memory"),)

router = APIRouter(include_in_schema=False)

_MAX_K = 50
_ITEMS_SHOWN = 200


@router.get("/memory")
async def scopes(
    request: Request,
    q: str = "",
    scope: str = "",
    k: str = "10",
    who: Viewer = Depends(page("read memory")),
) -> Response:
    store = console_of(request).server.app.memory
    found = await store.scopes()
    hits = None
    problem = None
    if q.strip():
        try:
            hits = await store.search(q, scope=_scopes(scope, [s.scope for s in found]), k=_k(k))
        except CrewlineError as e:
            problem = f"Search not run: {e}."
    context = {"scopes": found, "q": q, "scope": scope, "k": k, "hits": hits, "problem": problem, "fmt": FMT}
    return render(request, "memory.html", context, who=who, status=200 if problem is None else 422)


def _scopes(given: str, known: list[str]) -> list[str]:
    """The scopes to search: those typed (comma-separated), else every scope there is."""
    named = [s.strip() for s in given.split(",") if s.strip()]
    if named:
        return [validate_scope(s, field="scope") for s in named]
    if not known:
        raise InvalidInput("memory holds no scopes yet")
    return known


def _k(given: str) -> int:
    try:
        k = int(given)
    except ValueError:
        raise InvalidInput(f"results must be a whole number from 1 to {_MAX_K}, got {given!r}") from None
    if not 1 <= k <= _MAX_K:
        raise InvalidInput(f"results must be from 1 to {_MAX_K}, got {k}")
    return k


@router.get("/memory/scope/{scope}")
async def scope_page(request: Request, scope: str, who: Viewer = Depends(page("read memory"))) -> Response:
    return await _scope_page(request, who, scope)


async def _scope_page(
    request: Request,
    who: Viewer,
    scope: str,
    *,
    message: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    store = console_of(request).server.app.memory
    try:
        validate_scope(scope)
    except InvalidInput as e:
        raise PageError(404, "No such scope", f"{e}.") from None
    context = {
        "scope": scope,
        "items": await store.items(scope, limit=_ITEMS_SHOWN),
        "limit": _ITEMS_SHOWN,
        "documents": await store.documents(scope),
        "snapshots": await store.snapshots(scope),
        "history": await store.scope_history(scope, limit=50),
        "may_roll_back": who.may("roll back memory"),
        "message": message,
        "notice": notice,
        "fmt": FMT,
    }
    return render(request, "memory_scope.html", context, who=who, status=status)


@router.get("/memory/item/{item_id}")
async def item_page(request: Request, item_id: str, who: Viewer = Depends(page("read memory"))) -> Response:
    store = console_of(request).server.app.memory
    versions = await store.history(item_id)
    if not versions:
        raise PageError(
            404, "No such memory item", f"No item or document has the id {item_id!r} or any history."
        )
    current = await store.get(item_id)
    context = {"item_id": item_id, "versions": versions, "current": current, "fmt": FMT}
    return render(request, "memory_item.html", context, who=who)


@router.post("/memory/scope/{scope}/rollback")
async def roll_back(
    request: Request, scope: str, who: Viewer = Depends(change("roll back memory"))
) -> Response:
    form = await request.form()
    snapshot = str(form.get("snapshot") or "").strip()
    store = console_of(request).server.app.memory
    known = {s.id: s for s in await store.snapshots(scope)}
    if snapshot not in known:
        message = "Choose one of the scope's snapshots to roll back to; nothing was changed."
        return await _scope_page(request, who, scope, message=message, status=422)
    if form.get("confirm") != "yes":
        context = {"scope": scope, "snapshot": known[snapshot], "fmt": FMT}
        return render(request, "memory_rollback.html", context, who=who)
    try:
        report = await store.rollback(scope, to=snapshot, author=who.key.who)
    except InvalidInput as e:
        return await _scope_page(request, who, scope, message=f"Not rolled back: {e}.", status=409)
    notice = (
        f"Rolled {scope} back to snapshot {known[snapshot].label or snapshot}: {report.restored} restored, "
        f"{report.removed} removed. The rollback is itself in the history and can be undone the same way."
    )
    return await _scope_page(request, who, scope, notice=notice)

"""The shape of the package, read from its source: which modules import which, who touches whose private
members (read with ``ast``), who issues SQL on which table, and where the dialect is looked at.

Every import counts: module-level, function-level (deferred) and ``TYPE_CHECKING`` ones, since a cycle
that only a deferred import closes is still a cycle in the design. To hold another package to the same
rules, add it to ``CHECKED``. Layers import one way (ARCHITECTURE.md): server/cli -> app -> flows/workers ->
models/memory -> store -> errors/config; ``BELOW`` says what each layer may never import, ``ALLOWED`` the
exceptions to it.

Every table has one owning module (see :mod:`crewline.store`'s docstring); only it, and the migrations
of its component, name the table in SQL (``FROM`` / ``INTO`` / ``UPDATE`` / ``JOIN``). Code outside
``store/`` never asks which dialect it talks to; it calls the dialect's hooks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import crewline

ROOT = Path(crewline.__file__).parent
CHECKED = (
    "crewline.app",
    "crewline.observe",
    "crewline.cli",
    "crewline.connectors",
    "crewline.console",
    "crewline.evals",
    "crewline.flows",
    "crewline.memory",
    "crewline.secret_store",
    "crewline.server",
    "crewline.workers",
)
# The proxy is being reshaped together with models/; it joins the checked packages once that lands.
UNCHECKED = ("crewline.server.proxy",)

_APP_AND_ABOVE = ("crewline.app", "crewline.cli", "crewline.console", "crewline.server")
_ORCHESTRATION = ("crewline.flows", "crewline.workers")
# observe/ has two halves: what components emit with (events, the model-call context), which sits just above
# the store, and what consumes the events and the database (metrics, traces, reports, alerts), which sits
# above the engine. Components may import the first half only.
_EMITTING = ("crewline.observe.events", "crewline.observe.model_calls")
BELOW: dict[str, tuple[str, ...]] = {
    "crewline.errors": ("crewline",),
    "crewline.config": ("crewline",),
    "crewline.signing": ("crewline",),
    "crewline.store": ("crewline",),
    "crewline.secret_store": ("crewline",),
    "crewline.observe.events": ("crewline",),
    "crewline.observe.model_calls": ("crewline",),
    "crewline.memory": (*_APP_AND_ABOVE, *_ORCHESTRATION, "crewline.observe", "crewline.evals"),
    "crewline.models": (*_APP_AND_ABOVE, *_ORCHESTRATION, "crewline.observe", "crewline.evals"),
    "crewline.connectors": (
        *_APP_AND_ABOVE,
        *_ORCHESTRATION,
        "crewline.observe",
        "crewline.evals",
        "crewline.models",
        "crewline.memory",
    ),
    "crewline.flows": (*_APP_AND_ABOVE, "crewline.observe", "crewline.evals"),
    "crewline.workers": (*_APP_AND_ABOVE, "crewline.observe", "crewline.evals"),
    "crewline.observe": _APP_AND_ABOVE,
    "crewline.evals": _APP_AND_ABOVE,
}
# What the bottom may import after all: errors are raised everywhere, and config parses with their help.
ALLOWED = {
    "crewline.config": ("crewline.errors",),
    "crewline.store": ("crewline.errors", "crewline.config"),
    # Credentials sit just above the store, so every component can resolve a reference.
    "crewline.secret_store": ("crewline.errors", "crewline.config", "crewline.store"),
    "crewline.memory": _EMITTING,
    "crewline.connectors": (*_EMITTING, "crewline.secret_store"),
    "crewline.models": _EMITTING,
    "crewline.flows": _EMITTING,
    "crewline.workers": _EMITTING,
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]

    def tree(self) -> ast.Module:
        return ast.parse(self.path.read_text(encoding="utf-8"), str(self.path))


@cache
def modules() -> dict[str, Module]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, path, is_package)
    return found


def imported(module: Module) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    known = modules()
    out: set[str] = set()
    for node in ast.walk(module.tree()):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                # ``from . import prompts`` imports the module; ``from .engine import Suspend`` a name in one.
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    out.discard(module.name)
    return {name for name in out if name in known}


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.package.split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imported(m)) for name, m in modules().items()}


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def within(name: str, packages: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def checked(name: str) -> bool:
    return within(name, CHECKED) and not within(name, UNCHECKED)


def upward(
    edges: Mapping[str, Iterable[str]],
    below: Mapping[str, Iterable[str]],
    allowed: Mapping[str, Iterable[str]],
) -> list[str]:
    """Imports from a layer into one it must not import (``below[layer]``), unless ``allowed``."""
    found = []
    for name, targets in edges.items():
        for layer, forbidden in below.items():
            if not within(name, [layer]):
                continue
            for target in sorted(targets):
                if within(target, forbidden) and not within(target, [layer, *allowed.get(layer, ())]):
                    found.append(f"{name} -> {target}")
    return found


def test_the_import_graph_is_read_from_every_kind_of_import() -> None:
    """The graph sees module-level, TYPE_CHECKING and deferred imports, relative and absolute."""
    edges = graph()
    assert "crewline.flows.journal" in edges["crewline.flows.context"]  # module level
    assert "crewline.memory.workflow" in edges["crewline.flows.context"]  # TYPE_CHECKING and deferred
    assert "crewline.flows.prompts" in edges["crewline.flows.llm"]  # ``from . import prompts``
    assert "crewline.models" in edges["crewline.flows.llm"]  # deferred ``from ..models import user``


def test_no_import_cycle_goes_through_a_checked_package() -> None:
    through = [c for c in cycles(graph()) if any(checked(name) for name in c)]
    assert through == [], f"import cycles: {through}"


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}, "f": {"g"}, "g": {"f"}}
    assert sorted(cycles(edges)) == [["a", "b", "c"], ["f", "g"]]


def test_no_layer_imports_one_above_it() -> None:
    assert upward(graph(), BELOW, ALLOWED) == []


def test_the_layer_check_finds_upward_imports() -> None:
    edges = {
        "crewline.store.x": {"crewline.errors", "crewline.config", "crewline.flows.y"},
        "crewline.memory.m": {"crewline.store.x", "crewline.models.g", "crewline.server.s"},
        "crewline.models.g": {"crewline.observe.events", "crewline.observe.metrics"},
        "crewline.observe.events": {"crewline.store.x"},
        "crewline.config": {"crewline.errors", "crewline.store"},
        "crewline.errors": set(),
    }
    assert upward(edges, BELOW, ALLOWED) == [
        "crewline.store.x -> crewline.flows.y",
        "crewline.memory.m -> crewline.server.s",
        "crewline.models.g -> crewline.observe.metrics",
        "crewline.observe.events -> crewline.store.x",
        "crewline.config -> crewline.store",
    ]


def test_no_module_touches_another_objects_private_members() -> None:
    """``ctx._engine``, ``engine._models``, ``from .context import _Call``: private means one module's."""
    offences = []
    for name, module in modules().items():
        if not checked(name):
            continue
        for node in ast.walk(module.tree()):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    offences.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names if _private(a.name)]
                offences.extend(f"{name}:{node.lineno}: imports {n}" for n in names)
    assert offences == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


MODELS = "crewline.models"
# Private by name only: the standard library's documented way to leave a forked child at once.
STDLIB_PRIVATE = {"os._exit"}


def test_models_import_graph_is_acyclic() -> None:
    """Inside ``crewline.models`` imports run one way (gateway -> streaming -> meter -> ledger, ...)."""
    inside = {
        name: {target for target in targets if target.startswith(MODELS)}
        for name, targets in graph().items()
        if name.startswith(MODELS)
    }
    assert "crewline.models.types" in inside["crewline.models.gateway"]
    assert cycles(inside) == [], f"import cycles in {MODELS}: {cycles(inside)}"


def test_no_models_module_touches_another_objects_private_members() -> None:
    """``self._gateway._finish`` from the stream, ``error._attempts``: a module uses others' public names."""
    offences = []
    for name, module in modules().items():
        if not name.startswith(MODELS):
            continue
        for node in ast.walk(module.tree()):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                mine = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                if not mine and ast.unparse(node) not in STDLIB_PRIVATE:
                    offences.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names if _private(a.name)]
                offences.extend(f"{name}:{node.lineno}: imports {n}" for n in names)
    assert offences == []


# -- table owners and dialect hooks --------------------------------------------------------------------

# table -> the module that alone issues its SQL (paths under src/crewline).
OWNERS = {
    "runs": "flows/run_store.py",
    "steps": "flows/step_store.py",
    "events": "flows/event_store.py",
    "run_attempts": "flows/attempts.py",
    "reviews": "flows/review_requests.py",
    "prompt_versions": "flows/prompts.py",
    "prompt_labels": "flows/prompts.py",
    "switches": "flows/switches.py",
    "flags": "flows/switches.py",
    "model_calls": "models/call_log.py",
    "model_call_rollups": "models/call_log.py",
    "model_call_rollup_errors": "models/call_log.py",
    "model_call_rollup_state": "models/call_log.py",
    "model_call_hours": "models/call_log.py",
    "model_budgets": "models/ledger.py",
    "model_reservations": "models/ledger.py",
    "model_cache": "models/cache.py",
    "model_rate_windows": "models/limits.py",
    "model_input_factors": "models/calibration.py",
    "memory_items": "memory/versions.py",
    "memory_documents": "memory/versions.py",
    "memory_versions": "memory/versions.py",
    "memory_changes": "memory/versions.py",
    "memory_snapshots": "memory/rollback.py",
    "memory_messages": "memory/window.py",
    "memory_upkeep": "memory/upkeep.py",
    "memory_indexes": "memory/store.py",
    "memory_searches": "memory/retrieval.py",
    "memory_vectors": "memory/ann.py",
    "api_keys": "server/keys.py",
    "webhook_deliveries": "server/deliveries.py",
    "console_sessions": "console/sessions.py",
    "blobs": "store/payloads.py",
    "workers": "workers/claim.py",
    "schedules": "workers/cron.py",
    "inbox_state": "workers/inbox_state.py",
    "inbox_messages": "workers/inbox_state.py",
    "inbox_attachments": "workers/inbox_state.py",
    "schema_versions": "store/migrate.py",
    "eval_runs": "evals/results.py",
    "eval_cases": "evals/results.py",
    "eval_overrides": "evals/gate.py",
    "alert_state": "observe/alerts.py",
    "alert_history": "observe/alerts.py",
    "alert_outbox": "observe/alerts.py",
    "secrets": "secret_store.py",
    "slack_review_posts": "workers/slack_outbox.py",
    # The full-text hook's private in-memory tokenizer (store/fulltext.py), not in any crewline database.
    "scratch_text": "store/fulltext.py",
    "scratch_tokens": "store/fulltext.py",
}

# The model gateway still picks shared rate windows by the dialect's name (left to its own change).
DIALECT_MOVING = {"models/gateway.py"}

_SQL_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(\w+)")
_DIALECT_CHECK = re.compile(r"""dialect\.name\b|\.name\s*==\s*["'](?:sqlite|postgresql)["']""")


@cache
def _sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sorted(ROOT.rglob("*.py"))}


def tables_named(text: str) -> set[str]:
    return {m.group(1) for m in _SQL_TABLE.finditer(text)}


def _created_tables() -> set[str]:
    # A per-connection temp view of another table (temp.<name>) is not a table of its own.
    pattern = re.compile(r"CREATE (?:VIRTUAL )?TABLE (?:IF NOT EXISTS )?(?:temp\.)?(?!IF\b)(\w+)\b(?!\.)")
    return {m.group(1) for text in _sources().values() for m in pattern.finditer(text)}


def test_every_table_has_an_owner() -> None:
    assert _created_tables() == set(OWNERS)


def test_only_the_owner_issues_a_tables_sql() -> None:
    strays = []
    for path, text in _sources().items():
        for table in tables_named(text) & set(OWNERS):
            owner = OWNERS[table]
            beside = f"{owner.split('/')[0]}/migrations.py"
            if path not in (owner, beside):
                strays.append(f"{path} issues SQL on {table} (owner: {owner})")
    assert strays == []


def test_the_owner_map_is_written_down_in_the_store() -> None:
    doc = crewline.store.__doc__ or ""
    for table, owner in OWNERS.items():
        module = "crewline." + owner.removesuffix(".py").replace("/", ".")
        assert re.search(rf"``{table}``[^\n]*{re.escape(module)}", doc), f"{table} -> {module} missing"


def test_no_dialect_checks_outside_the_store() -> None:
    found = [
        path
        for path, text in _sources().items()
        if not path.startswith("store/") and path not in DIALECT_MOVING and _DIALECT_CHECK.search(text)
    ]
    assert found == []


def test_no_hand_written_row_locks_outside_the_store() -> None:
    lock = re.compile(r"FOR (?:NO KEY )?UPDATE|SKIP LOCKED")
    found = [path for path, text in _sources().items() if not path.startswith("store/") and lock.search(text)]
    assert found == []

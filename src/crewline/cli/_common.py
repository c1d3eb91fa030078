"""Shared CLI plumbing: loading the app, reading JSON arguments, printing tables and errors."""

from __future__ import annotations

import asyncio
import getpass
import importlib
import importlib.util
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ..app import App
from ..config import CONFIG_FILE, Settings, find_project, shown_path
from ..errors import (
    ConfigError,
    CrewlineError,
    InvalidInput,
    InvalidRunState,
    ReviewNotFound,
    RunNotFound,
    UnknownWorkflow,
)
from ..store.dialects import dialect_for_url
from ..store.payloads import parse_json

__all__ = [
    "LoopFactory",
    "app_option",
    "database_label",
    "fail",
    "load_app",
    "loop_option",
    "read_json_arg",
    "run_async",
    "table",
    "user",
    "when",
]

T = TypeVar("T")
# Errors that mean "you asked for something wrong": exit code 2, like a usage error.
_USER_ERRORS = (ConfigError, InvalidInput, UnknownWorkflow, RunNotFound, InvalidRunState, ReviewNotFound)


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"crewline: error: {message}", err=True)
    sys.exit(code)


@contextmanager
def errors_as_exit() -> Iterator[None]:
    try:
        yield
    except _USER_ERRORS as e:
        fail(str(e), 2)
    except CrewlineError as e:
        fail(str(e), 1)
    except Exception as e:
        # A driver error that escaped the store's own handling: say what the database answered, not a
        # traceback. Anything else is a bug and keeps its traceback.
        if isinstance(e, sqlite3.Error) or type(e).__module__.startswith("psycopg"):
            text = str(e)
            if "no such table" in text or ("relation" in text and "does not exist" in text):
                fail(
                    f"the database has no crewline tables for this yet ({text.splitlines()[0]}): "
                    "run `crewline db upgrade` first"
                )
            fail(f"the database answered: {text} (check the database URL and that it is reachable)", 1)
        raise


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def configure_logging() -> None:
    """The log of long-running commands: one line per record on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request's URL at INFO, and some URLs are secrets (a Slack webhook URL is one).
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run_async(coro: Coroutine[Any, Any, T], loop_factory: LoopFactory | None = None) -> T:
    # asyncio.run takes a loop_factory only from Python 3.12; a Runner is what it does underneath.
    with errors_as_exit(), asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


def _loop_factory(_: click.Context, param: click.Parameter, name: str) -> LoopFactory | None:
    """The event loop to run on (None: asyncio's default). uvloop runs the loop and socket I/O in C
    (libuv): each request, and each step's hand-off from the commit thread, costs less CPU than on
    asyncio's loop, which is mostly Python."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise click.BadParameter(
                "uvloop is not installed: install it with `pip install uvloop` (it does not run on Windows), "
                "or use --loop asyncio",
                param=param,
            ) from None
        return None  # e.g. Windows, which uvloop does not support
    return uvloop.new_event_loop


loop_option = click.option(
    "--loop",
    "loop_factory",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    show_default=True,
    callback=_loop_factory,
    help="Event loop: uvloop (faster; not on Windows) or asyncio's own. auto: uvloop when installed.",
)


app_option = click.option(
    "--app",
    "app_ref",
    envvar="CREWLINE_APP",
    help="The application, as package.module:attribute (default: `app` in crewline.toml).",
)


def load_app(app_ref: str | None) -> App:
    """Import the operator's app, or a bare App over the configured database when none is named."""
    settings = load_settings()
    ref = app_ref or settings.app
    if ref and settings.config_file is None and not _project_named():
        settings = _project_of_module(ref.partition(":")[0], settings)
    note_database(settings)
    if not ref:
        return App(settings=settings)
    module_name, _, attr = ref.partition(":")
    if str(settings.project_dir) not in sys.path:
        sys.path.insert(0, str(settings.project_dir))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        fail(f"cannot import the app module {module_name!r}: {e}")
    app = getattr(module, attr or "app", None)
    if not isinstance(app, App):
        fail(f"{ref} is not a crewline App (expected package.module:attribute naming an App)")
    return app


def load_settings() -> Settings:
    with errors_as_exit():
        return Settings.load()


def _project_named() -> bool:
    return bool(os.environ.get("CREWLINE_PROJECT") or os.environ.get("CREWLINE_PROJECT_DIR"))


def _project_of_module(module_name: str, settings: Settings) -> Settings:
    """With no crewline.toml here or above, the project is the one the app's module lives in."""
    if str(settings.project_dir) not in sys.path:
        sys.path.insert(0, str(settings.project_dir))
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return settings  # importing it says what is wrong
    if spec is None or spec.origin is None or not os.path.isfile(spec.origin):
        return settings
    project = find_project(Path(spec.origin).parent)
    if project is None:
        return settings
    os.environ["CREWLINE_PROJECT"] = str(project)  # for the App the module builds when imported
    return load_settings()


def note_database(settings: Settings) -> None:
    """Say so when no project was found and the default database is about to be used (or created)."""
    if settings.config_file is not None or os.environ.get("CREWLINE_DATABASE_URL"):
        return
    here = Path.cwd()
    nearby = sorted(p.parent.name for p in here.glob(f"*/{CONFIG_FILE}"))
    hint = f" (here: --project {' or '.join(nearby)})" if nearby else ""
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    state = "using" if path.exists() else "creating"
    click.echo(
        f"crewline: no {CONFIG_FILE} in this directory or above: {state} the database "
        f"{database_label(settings.database_url)}; to use a project, run from its directory or pass "
        f"--project DIR{hint}",
        err=True,
    )


def database_label(url: str) -> str:
    """The database for a message: a SQLite file as a path from here, any other URL without password."""
    if url.startswith("sqlite:///"):
        return shown_path(Path(url.removeprefix("sqlite:///")))
    return dialect_for_url(url).safe_url()


def read_json_arg(value: str | None, what: str) -> Any:
    """A JSON value given inline or as @path/to/file.json."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            fail(f"cannot read {what} file {path}: {e}")
    try:
        return parse_json(text, what)
    except InvalidInput as e:
        fail(f"{e}; pass JSON or @file.json")


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def with_app(fn: Callable[[App], Coroutine[Any, Any, T]], app: App) -> T:
    async def go() -> T:
        try:
            return await fn(app)
        finally:
            await app.aclose()

    return run_async(go())


def user() -> str:
    """Who is deciding at this terminal (recorded with the decision)."""
    try:
        return getpass.getuser()
    except Exception:
        return "operator"

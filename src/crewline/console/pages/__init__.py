"""The console's pages, one module per page group; adding a page group is adding a module here.

Each module has a ``router`` (an ``APIRouter``) and ``NAV``, the nav entries it adds (a tuple of
:class:`~crewline.console.web.NavEntry`; empty for modules with no entry). Modules whose names start
with ``_`` hold shared helpers and are not pages.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = ["page_modules"]


def page_modules() -> list[ModuleType]:
    return [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]

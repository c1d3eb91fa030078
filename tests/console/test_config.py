"""``[console]`` in crewline.toml: read by the console, checked by `crewline config check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from crewline.console.config import ConsoleConfig
from crewline.errors import ConfigError

from ..test_config_check import _crewline


def test_config_check_names_the_console_key_that_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text('[console]\nsession_idle = "soon"\nsession_mx = "7d"\n')
    proc = _crewline(tmp_path, "config", "check")
    assert proc.returncode == 2, proc.stderr
    assert "error: [console]: unknown setting(s) session_mx (known: session_idle, session_max)" in proc.stdout
    (tmp_path / "crewline.toml").write_text('[console]\nsession_idle = "soon"\n')
    proc = _crewline(tmp_path, "config", "check")
    assert "error: [console] session_idle: " in proc.stdout and "soon" in proc.stdout


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ({"session_idle": "10s"}, "too short"),
        ({"session_idle": "8d", "session_max": "7d"}, "must not be longer than session_max"),
        ("8h", "must be a table"),
    ],
)
def test_bad_console_settings_are_refused(table: object, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        ConsoleConfig.parse(table)
    assert ConsoleConfig.parse({"session_idle": "1h"}).session_idle == 3600.0

"""Runs llama.cpp's OpenAI-compatible server, and ends it when the crewline process that started it ends.

Started as a script (not ``-m crewline...``, which would import the whole package first). The parent keeps
the write end of this process's stdin open and never writes; when the parent goes away, even killed with
SIGKILL, the kernel closes that end, the read below returns EOF and this process exits, so no orphaned
server holds on to its few hundred megabytes. Linux's PR_SET_PDEATHSIG is not used: it fires when the
*thread* that forked exits, not the process, and exists only on Linux.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading


def _watch_parent() -> None:
    while os.read(0, 4096):
        pass
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()
    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)

"""Start-up time: ``import crewline``, ``crewline --help`` and ``from crewline import App``, before and after.

Each command runs in a fresh interpreter, the two trees interleaved run by run so both see the same machine;
the table shows the median, min and max wall time of each. "before" is another revision checked out beside
this one under bench/.data (a detached ``git worktree``, as bench/compare does); "after" is this checkout.
A bare ``python -c pass`` is timed too: the interpreter's own start-up, which no change here can remove.

    python bench/startup.py [--runs 9] [--before e40d219]

Goals: ``crewline --help`` < 300 ms, ``import crewline`` < 200 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "import crewline": ["-c", "import crewline"],
    "crewline --help": ["-m", "crewline", "--help"],
    "from crewline import App": ["-c", "from crewline import App"],
}


def checkout(rev: str) -> Path:
    """A detached worktree of REV under bench/.data, made once."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = HERE / ".data" / f"rev-{sha}"
    if not tree.is_dir():
        tree.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), sha], check=True
        )
    return tree


def once(tree: Path, args: list[str]) -> float:
    """Seconds one fresh interpreter takes to run ARGS against TREE's sources."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def measure(trees: dict[str, Path], runs: int) -> dict[tuple[str, str], list[float]]:
    samples: dict[tuple[str, str], list[float]] = {}
    for tree in trees.values():  # a warm-up, so the first timed run does not read the disk
        for args in COMMANDS.values():
            once(tree, args)
    for _ in range(runs):
        for label, args in COMMANDS.items():
            for side, tree in trees.items():
                samples.setdefault((label, side), []).append(once(tree, args))
    return samples


def table(samples: dict[tuple[str, str], list[float]], sides: list[str]) -> str:
    head = f"{'ms':<26}" + "".join(f"{side + ' median':>16}{'min':>8}{'max':>8}" for side in sides)
    lines = [head]
    for label in COMMANDS:
        row = f"{label:<26}"
        for side in sides:
            got = [s * 1000 for s in samples[(label, side)]]
            row += f"{statistics.median(got):>16.0f}{min(got):>8.0f}{max(got):>8.0f}"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9, help="timed runs of each command on each side")
    parser.add_argument("--before", default="e40d219", help="the revision to compare with (default e40d219)")
    options = parser.parse_args()
    before = checkout(options.before)
    trees = {f"before {before.name.removeprefix('rev-')}": before, "after": ROOT}
    samples = measure(trees, options.runs)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}; {options.runs} runs each, interleaved")
    print(table(samples, list(trees)))


if __name__ == "__main__":
    main()

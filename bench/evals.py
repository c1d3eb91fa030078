"""Evaluation throughput: cases per second at concurrency 1, 8 and 32 against the fake provider.

    .venv/bin/python bench/evals.py [--cases 64] [--latency 0.05] [--database sqlite|postgresql://...]

Starts the fake provider in its own process (``python -m crewline.testing``) with a fixed reply latency
standing in for a model, stores a prompt and a dataset of ``--cases`` cases, then runs ``crewline eval``'s
runner (render, gateway call with the cache off, two scorers, one stored row per case) at each
concurrency, and prints cases per second and the wall time. Numbers, never assertions.

promptfoo (the npm package) runs the same kind of matrix: its ``maxConcurrency`` (default 4) bounds the
calls in flight, and repeats (``--repeat``) are answered from its cache unless ``--no-cache`` is given
(promptfoo#1888), which is why crewline's runner always bypasses the cache. With ``--promptfoo PATH`` (the
``promptfoo`` binary of an npm install) the same cases go through it against the same fake provider, side
by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crewline.config import Settings
from crewline.evals.runner import Tools
from crewline.evals.targets import EvalAsk, evaluate
from crewline.flows.prompts import sync_prompts
from crewline.models import Gateway, ModelsConfig
from crewline.store import open_database

PROMPT = "---\nparams: [text]\nmodel: fake/m\n---\nSay {{ text }}\n"


def _fake(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "crewline.testing", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _project(root: Path, cases: int) -> None:
    (root / "prompts").mkdir()
    (root / "evals").mkdir()
    (root / "prompts" / "say.md").write_text(PROMPT)
    lines = [json.dumps({"input": {"text": f"word {i}"}, "expected": f"word {i}"}) for i in range(cases)]
    (root / "evals" / "bench.jsonl").write_text("\n".join(lines) + "\n")


async def _one(root: Path, url: str, database: str, concurrency: int) -> tuple[float, int]:
    db = open_database(database)
    sync_prompts(db, root / "prompts")
    config = ModelsConfig.parse(
        {
            "providers": {"fake": {"format": "openai", "base_url": url + "/v1", "api_key_env": "FAKE_KEY"}},
            "prices": {"fake/m": {"input": 0.0, "output": 0.0}},
        }
    )
    gateway = Gateway(config, db, environ={"FAKE_KEY": "sk-bench"})
    settings = Settings(project_dir=root, database_url=database)
    ask = EvalAsk("say", dataset="bench", scorers=("contains", "regex:word"), concurrency=concurrency)
    try:
        started = time.perf_counter()
        run = await evaluate(settings, db, Tools(gateway), ask, lambda _: None)
        return time.perf_counter() - started, int(run.summary["runs"])
    finally:
        await gateway.aclose()
        db.close()


def _promptfoo(binary: str, root: Path, url: str, cases: int, concurrency: int) -> float:
    config = {
        "prompts": ["Say {{text}}"],
        "providers": [{"id": "openai:chat:m", "config": {"apiBaseUrl": url + "/v1", "apiKey": "sk-bench"}}],
        "tests": [
            {"vars": {"text": f"word {i}"}, "assert": [{"type": "contains", "value": "word"}]}
            for i in range(cases)
        ],
    }
    path = root / "promptfooconfig.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "PROMPTFOO_DISABLE_UPDATE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [binary, "eval", "-c", str(path), "--no-cache", "--max-concurrency", str(concurrency), "--no-write"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 100):  # 100: it ran, and some assertion failed
        why = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise RuntimeError(f"promptfoo did not run (exit {done.returncode}): {why[0][:120]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05, help="the fake model's reply latency (s)")
    parser.add_argument("--database", default="sqlite", help="sqlite (a temporary file) or a PostgreSQL URL")
    parser.add_argument("--promptfoo", help="the promptfoo binary, to run the same cases through it")
    args = parser.parse_args()
    proc, url = _fake(args.latency)
    print(f"{args.cases} cases, fake provider latency {args.latency * 1000:.0f} ms, database {args.database}")
    print(f"{'runner':<12}{'concurrency':>12}{'seconds':>10}{'cases/s':>10}")
    try:
        for concurrency in (1, 8, 32):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                _project(root, args.cases)
                database = f"sqlite:///{root}/bench.db" if args.database == "sqlite" else args.database
                seconds, runs = asyncio.run(_one(root, url, database, concurrency))
                print(f"{'crewline':<12}{concurrency:>12}{seconds:>10.2f}{runs / seconds:>10.1f}")
                if args.promptfoo:
                    try:
                        seconds = _promptfoo(args.promptfoo, root, url, args.cases, concurrency)
                    except (RuntimeError, OSError) as e:
                        print(f"{'promptfoo':<12}{concurrency:>12}  {e}")
                        continue
                    print(f"{'promptfoo':<12}{concurrency:>12}{seconds:>10.2f}{args.cases / seconds:>10.1f}")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()

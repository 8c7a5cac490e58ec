"""`python -m bench [--quick] [--only NAME …]`: run the benchmarks, write results.json and the report.

A full run of every benchmark writes bench/results.json, docs/benchmarks.md (between its markers)
and docs/benchmarks.png; --quick (every benchmark at a tiny size) and --only write bench/out/ alone.
Any run fails when a benchmark produced no numbers; none judges a speed.
"""

import argparse
import asyncio
import contextlib
import importlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.harness import ROOT, Context, Figure, machine

BENCHMARKS = ["verify", "ingest", "lag", "replay", "key_view", "lifecycle", "memory", "tree"]


@contextlib.contextmanager
def postgres_server():
    if url := os.environ.get("KEYLEDGER_BENCH_DATABASE_URL"):
        yield url
        return
    from service.store.embedded import embedded_postgres

    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="keyledger-bench-") as folder:
        warnings.simplefilter("ignore")
        with embedded_postgres(Path(folder)) as url:
            yield url


async def run(names: list[str], quick: bool, server_url: str) -> tuple[list[Figure], dict]:
    context = Context(quick=quick, server_url=server_url, repeats=1 if quick else 3)
    connection = await asyncpg.connect(server_url)
    postgres = await connection.fetchval("SHOW server_version")
    await connection.close()
    figures = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        started = time.monotonic()
        print(f"── {name}", flush=True)
        for figure in await module.run(context):
            figures.append(figure)
            print("   " + describe(figure), flush=True)
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    environment = {**machine(), "postgresql": postgres, "quick": quick, "at": datetime.now(UTC).isoformat()}
    return figures, environment


def describe(figure: Figure) -> str:
    text = f"{figure.name}: {figure.value:,.2f} {figure.unit}"
    if figure.baseline_value is not None:
        text += f"  vs {figure.baseline_name} {figure.baseline_value:,.2f}  ratio {figure.ratio:.2f}"
    if figure.goal:
        text += f"  goal {figure.goal}: {'met' if figure.met else 'missed'}"
    return text


def check_numbers(figures: list[Figure], names: list[str]) -> list[str]:
    problems = [
        f"{f.benchmark}/{f.name} is {f.value}" for f in figures if not math.isfinite(f.value) or f.value <= 0
    ]
    produced = {figure.benchmark for figure in figures}
    return problems + [f"{name} produced no figure" for name in names if name not in produced]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to prove every benchmark runs")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    names = args.only or BENCHMARKS
    with postgres_server() as server_url:
        figures, environment = asyncio.run(run(names, args.quick, server_url))
    results = {"environment": environment, "figures": [figure.as_dict() for figure in figures]}
    complete = not args.quick and not args.only  # only a full run of everything is published
    out = ROOT / "bench" if complete else ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / ("results.json" if complete else "results-partial.json")).write_text(
        json.dumps(results, indent=2) + "\n"
    )
    if problems := check_numbers(figures, names):
        print("Benchmarks without numbers:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if complete:
        from bench.report import write_report

        write_report(figures, environment)
    print(f"{len(figures)} figures from {len(names)} benchmarks written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

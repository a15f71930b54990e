"""Run the benchmarks and print their tables.

    .venv/bin/python -m bench.run                 # all of them
    .venv/bin/python -m bench.run drivers anomaly # some of them

Each `bench/bench_<name>.py` has a `main()` that prints a table of medians.
Benchmarks are never part of the test suite: the machines are noisy, so
numbers are quoted as medians over repeated runs, not asserted.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
from pathlib import Path

NAMES = sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    chosen = argv or NAMES
    unknown = [n for n in chosen if n not in NAMES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(NAMES)}")
        return 2
    status = 0
    for name in chosen:
        print(f"\n=== bench_{name}", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        t0 = time.perf_counter()
        fn = module.main
        sys.argv = [f"bench_{name}"]  # mains that parse sys.argv get their defaults
        rc = fn([]) if inspect.signature(fn).parameters else fn()
        print(f"(bench_{name}: {time.perf_counter() - t0:.1f} s)", flush=True)
        if isinstance(rc, int) and rc != 0:
            status = rc
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

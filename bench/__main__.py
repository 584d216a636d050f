"""Run every ``bench/bench_*.py`` (or the ones named): ``python -m bench [core gate ...]``.

Each module has ``main() -> None`` that prints its figures and ratios. Nothing here asserts
on time: these are measurements for the README and the issue notes, not tests.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [f"bench_{a}" for a in argv] or names
    for name in wanted:
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])

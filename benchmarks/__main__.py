"""`python -m benchmarks`: the store benchmark (W1, W2; then W3 and the scale row, see `scaling`;
then the search figures, see `search`) on every available backend; see `harness`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from . import peers_adk, scaling, search
from .backends import BACKENDS
from .harness import READS, SESSIONS, TURNS, main


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--backends", nargs="*", default=[], help="names to run (default: all available)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--sessions", type=int, default=SESSIONS)
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--reads", type=int, default=READS)
    parser.add_argument("--no-write", dest="write", action="store_false", help="print only; leave RESULTS.md alone")
    scaling.add_arguments(parser)
    search.add_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    from . import peers_adk, peers_openai_agents

    arguments = parse(sys.argv[1:])
    # The framework peer rows follow, each skipped without its extra.
    sys.exit(
        asyncio.run(main(arguments, BACKENDS))
        or asyncio.run(scaling.main(arguments, BACKENDS))
        or asyncio.run(search.main(arguments, BACKENDS))
        or asyncio.run(peers_openai_agents.main(arguments))
        or asyncio.run(peers_adk.main(arguments))
    )

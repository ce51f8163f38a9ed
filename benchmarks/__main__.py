"""`python -m benchmarks`: the store benchmark (W1, W2; then W3 and the scale row, see `scaling`;
the listing figures, see `listing`; the erase figure, see `lifecycle`; the search figures, see
`search`) on every available backend; see `harness`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from . import lifecycle, listing, peers_adk, scaling, search
from .backends import BACKENDS
from .harness import READS, SESSIONS, TURNS, main, standalone_parser


def parse(argv: list[str]) -> argparse.Namespace:
    parser = standalone_parser("python -m benchmarks", __doc__)
    parser.add_argument("--sessions", type=int, default=SESSIONS)
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--reads", type=int, default=READS)
    scaling.add_arguments(parser)
    listing.add_arguments(parser)
    lifecycle.add_arguments(parser)
    search.add_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    from . import peers_adk, peers_openai_agents

    arguments = parse(sys.argv[1:])
    # The framework peer rows follow, each skipped without its extra.
    sys.exit(
        asyncio.run(main(arguments, BACKENDS))
        or asyncio.run(scaling.main(arguments, BACKENDS))
        or asyncio.run(listing.main(arguments, BACKENDS))
        or asyncio.run(lifecycle.main(arguments, BACKENDS))
        or asyncio.run(search.main(arguments, BACKENDS))
        or asyncio.run(peers_openai_agents.main(arguments))
        or asyncio.run(peers_adk.main(arguments))
    )

"""`python -m bench [--quick] [--json]`: every engine benchmark, one run, figures and ratios.

`python -m bench lock …`: the permission lock's cost on /run throughput (bench/lock.py).
`python -m bench image …`: image build speed and size (bench/image.py).
`python -m bench history …`: what recording runs costs on /run throughput (bench/history.py).
"""

import importlib
import sys

# Subcommands, each a module with main(argv); anything else goes to bench.run as before.
COMMANDS = {"lock": "bench.lock", "image": "bench.image", "history": "bench.history"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    from bench.run import main as run_main

    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())

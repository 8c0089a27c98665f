"""Command-line entry point: `python -m autograder <command> ...`."""
import argparse
import sys

from autograder import review
from autograder.devtools import bench, demo
from autograder.fixtures import build as fixtures
from autograder.grading import cli as grading_cli
from autograder.notebook import build, course


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (fixtures, build, course, grading_cli, demo, review, bench):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

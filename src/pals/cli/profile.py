"""`pals profile` (placeholder until its issue lands: the owner replaces this file)."""

from pals.cli._common import add_command
from pals.errors import PalsError


def add_parser(subparsers):
    add_command(subparsers, "profile", "(not built yet)", "Not built yet.", run)


def run(args) -> int:
    raise PalsError("'pals profile' is not built yet")

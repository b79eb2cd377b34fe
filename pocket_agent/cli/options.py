"""What every subcommand shares: parse the same options, or say why not in one line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TypeVar

from twisted.python import usage

from pocket_agent.tap import Options

OptionsT = TypeVar("OptionsT", bound=Options)


def parse(options: OptionsT, argv: Sequence[str], command: str) -> OptionsT | None:
    """Parsed options with their config, or None after printing the one-line error."""
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return None
    return options

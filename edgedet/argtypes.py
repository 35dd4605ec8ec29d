"""argparse types for numbers with a range: a bad value is a one-line usage error, not a
silently different run (``--limit 0`` meaning "all", ``--score 1.5`` finding nothing)."""
from __future__ import annotations

import argparse


def at_least(low: int):
    """An ``int`` type that refuses values below ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def fraction(text: str) -> float:
    """A ``float`` in [0, 1] (scores, IoU thresholds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


positive = at_least(1)

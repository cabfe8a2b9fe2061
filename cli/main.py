"""Entry point placeholder; the commands live in this package."""

from __future__ import annotations


def main() -> None:
    raise SystemExit(0)

"""The ``registry`` command, one module per command group (``app`` builds the parser).

``main`` and ``build_parser`` are imported lazily: ``registry health``, the container's
HEALTHCHECK, imports ``registry.cli.health`` alone and must stay light."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    """The ``registry`` console script (``registry.cli:main``)."""
    from registry.cli.app import main as run

    return run(argv)


def build_parser() -> argparse.ArgumentParser:
    """The ``registry`` command's argument parser (every command group)."""
    from registry.cli.app import build_parser as build

    return build()

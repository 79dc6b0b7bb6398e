"""Helpers shared by the CLI commands: consoles, one-line errors, logging."""
from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console


def consoles() -> tuple[Console, Console]:
    """(stdout console, stderr console)."""
    return Console(), Console(stderr=True)


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print one clear line to stderr and return the Exit to raise."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def is_terminal() -> bool:
    return sys.stderr.isatty()

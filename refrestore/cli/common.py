"""Helpers shared by the CLI commands: consoles, one-line errors, logging, tidy help.

Only typer and rich are imported here: every command's ``--help`` goes through this module.
"""
from __future__ import annotations

import logging
import sys
from enum import IntEnum
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup


class Verbosity(IntEnum):
    """-q: errors and the summary only; default: progress and notes; -v: info logs; --debug."""

    QUIET = 0
    NORMAL = 1
    VERBOSE = 2
    DEBUG = 3


def verbosity_from(quiet: bool, verbose: bool, debug: bool = False) -> Verbosity:
    if debug:
        return Verbosity.DEBUG
    if quiet:
        return Verbosity.QUIET
    return Verbosity.VERBOSE if verbose else Verbosity.NORMAL


def consoles() -> tuple[Console, Console]:
    """(stdout console, stderr console)."""
    return Console(), Console(stderr=True)


def print_error(message: str, console: Console | None = None) -> None:
    """One ``error: ...`` line on stderr (or ``console``). ``message`` is plain text: a file named
    ``photo [draft].jpg`` is shown as it is (rich would take ``[draft]`` for a style, and a
    ``[/x]`` in a name for a closing tag it cannot match)."""
    from rich.markup import escape

    console = console if console is not None else Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print one clear line to stderr (:func:`print_error`) and return the Exit to raise."""
    print_error(message)
    return typer.Exit(code)


def setup_logging(debug: bool, verbosity: Verbosity | None = None) -> None:
    if debug or verbosity == Verbosity.DEBUG:
        level = logging.DEBUG
    elif verbosity == Verbosity.VERBOSE:
        level = logging.INFO
    elif verbosity == Verbosity.QUIET:
        level = logging.ERROR
    else:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def is_terminal() -> bool:
    return sys.stderr.isatty()


# ---- help text ------------------------------------------------------------------------------
# Typer's rich help prints every parameter's Python type ("<bool>" beside flags,
# "<list[Path]>", "{inputs}..."): these classes show metavars the way Unix tools do.

def _tidy_params(params: list[Any]) -> None:
    for p in params:
        if p.param_type_name == "argument":
            if p.metavar is None:
                p.metavar = p.name.upper() + ("..." if p.nargs != 1 else "")
            p.display_type_rich = lambda ctx: None  # the metavar already says it
        elif getattr(p, "is_flag", False) or getattr(p, "count", False):
            if p.metavar is None:
                p.metavar = ""
        elif p.metavar is None:
            p.metavar = p.name.upper()  # --weights-dir WEIGHTS_DIR, as argparse would say


def _plain_help_option(option: Any) -> Any:
    if option is not None:
        option.metavar = ""
        if option.default is None:
            # A bool, not None: typer coerces None through pydantic, a 0.3 s import per start.
            option.default = False
    return option


class PlainHelpCommand(TyperCommand):
    """A command whose help shows ``INPUT...`` and no type names beside flags."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_option(super().get_help_option(ctx))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _tidy_params(self.params)
        super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                name = p.metavar or p.name.upper() + ("..." if p.nargs != 1 else "")
                pieces.append(name if p.required else f"[{name}]")
        return pieces


class PlainHelpGroup(TyperGroup):
    """The top-level group, with the same tidy help option."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_option(super().get_help_option(ctx))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _tidy_params(self.params)
        super().format_help(ctx, formatter)

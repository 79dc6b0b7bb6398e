"""Helpers shared by the CLI commands: consoles, one-line errors, logging, tidy help.

Only typer and rich are imported here: every command's ``--help`` goes through this module.
"""
from __future__ import annotations

import logging
import os
import re
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


# ---- the terminal is not a data channel ---------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: str) -> str:
    """``text`` safe to print: control characters (an escape sequence or a newline in a file
    name) as ``\\x1b``/``\\n``, bytes that are not UTF-8 as ``\\xNN``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


class SafeStream:
    """stdout or stderr for messages. A broken pipe (``| head -1``), a full disk or a closed
    stream stops the messages, never the work: the first failure silences the stream (its
    descriptor then points at /dev/null, so the interpreter's last flush cannot fail either).
    The stream is the one ``sys`` has when this is made (rich's live display later swaps
    ``sys.stderr`` for a proxy that writes back into its console: looked up at each write, that
    would loop)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.broken = False
        self.stream = getattr(sys, name, None)

    def _stream(self) -> Any:
        return None if self.broken else self.stream

    def _silence(self, stream: Any) -> None:
        self.broken = True
        try:
            fd = stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text: str) -> int:
        stream = self._stream()
        if stream is not None:
            try:
                stream.write(text)
            except (OSError, ValueError):
                self._silence(stream)
        return len(text)

    def flush(self) -> None:
        stream = self._stream()
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                self._silence(stream)

    def isatty(self) -> bool:
        stream = self._stream()
        try:
            return bool(stream is not None and stream.isatty())
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        stream = self._stream()
        if stream is None:
            raise OSError("stream closed")
        return int(stream.fileno())

    @property
    def encoding(self) -> str:
        return getattr(self._stream(), "encoding", None) or "utf-8"


class PlainConsole(Console):
    """A console for messages that hold the user's file names: markup off (``[draft]`` is text),
    every string escaped (:func:`shown`), written through a :class:`SafeStream`."""

    def __init__(self, stderr: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("highlight", False)
        kwargs.setdefault("soft_wrap", True)
        kwargs.setdefault("markup", False)
        super().__init__(file=SafeStream("stderr" if stderr else "stdout"), **kwargs)  # type: ignore[arg-type]

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().print(*(shown(o) if isinstance(o, str) else o for o in objects), **kwargs)


def consoles() -> tuple[Console, Console]:
    """(stdout console, stderr console)."""
    return PlainConsole(), PlainConsole(stderr=True)


def standard_streams() -> None:
    """Run with stdin, stdout and stderr open: a command started with one closed (``2>&-``)
    would otherwise hand that descriptor to the first file it opens, and whatever a library
    prints there would land in a photo. Closed ones get /dev/null."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name, None) is None:
            setattr(sys, name, os.fdopen(fd, "r" if fd == 0 else "w", closefd=False))


def print_error(message: str, console: Console | None = None) -> None:
    """One ``error: ...`` line on stderr (or ``console``). ``message`` is plain text: a file named
    ``photo [draft].jpg`` is shown as it is (rich would take ``[draft]`` for a style, and a
    ``[/x]`` in a name for a closing tag it cannot match), control characters escaped."""
    from rich.markup import escape

    console = console if console is not None else PlainConsole(stderr=True)
    Console.print(console, f"[bold red]error:[/] {escape(shown(message))}", markup=True, highlight=False)


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
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=SafeStream("stderr"),  # type: ignore[arg-type]
                        force=True)


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

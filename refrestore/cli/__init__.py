"""The ``refrestore`` command line: a thin layer over the library.

Each command lives in its own module and registers itself on the Typer app. Command modules
import only typer and rich at the top; the library (torch, cv2, dlib) is imported when a
command runs, so ``--help`` and ``--version`` start in a fraction of a second.
"""
from __future__ import annotations

import typer
from typer.core import TyperCommand

from . import fix_cmd, gallery_cmd, match_cmd, train_cmd, weights_cmd
from .common import PlainHelpCommand, PlainHelpGroup


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"refrestore {__version__}")
        raise typer.Exit(0)


def _root(
    # A plain bool: typer coerces other types through pydantic, a 0.3 s import on every start.
    version: bool = typer.Option(
        False, "--version", "-V", callback=_show_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Restore faces in old photos, guided by good photos of the same people."""


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="refrestore",
        help="Restore faces in old photos, guided by good photos of the same people.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        cls=PlainHelpGroup,
    )
    app.callback()(_root)
    for module in (fix_cmd, match_cmd, gallery_cmd, weights_cmd, train_cmd):
        module.register(app)
    for command in app.registered_commands:
        # Every command's help shows metavars, not Python types (see common.PlainHelpCommand).
        if command.cls is None or command.cls is TyperCommand:
            command.cls = PlainHelpCommand
    return app


def main() -> None:
    import sys

    from .common import print_error, standard_streams

    standard_streams()
    try:
        build_app()()
    except (ImportError, MemoryError, OSError) as exc:
        # The machine's limits (a memory limit such as `ulimit -v` makes torch's import fail
        # to map its libraries) are one line, not a traceback; --debug shows it.
        if "--debug" in sys.argv:
            raise
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = " (not enough memory: is a memory limit such as ulimit -v set too low?)" \
            if isinstance(exc, MemoryError) or "map" in text or "memory" in text.lower() else ""
        what = ""
        if isinstance(exc, ImportError):  # torch._C's error names only "_C": its package says more
            from pathlib import Path

            lib = Path(exc.path).parent.name if exc.path else (exc.name or "a library refrestore needs").split(".")[0]
            what = f"cannot load {lib}: "
        print_error(f"{what}{text}{hint}")
        raise SystemExit(1) from None

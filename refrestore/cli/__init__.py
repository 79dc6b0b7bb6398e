"""The ``refrestore`` command line: a thin layer over the library.

Each command lives in its own module and registers itself on the Typer app.
"""
from __future__ import annotations

import typer

from . import fix_cmd, match_cmd, train_cmd, weights_cmd


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="refrestore",
        help="Restore faces in old photos, guided by good photos of the same people.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module in (fix_cmd, match_cmd, weights_cmd, train_cmd):
        module.register(app)
    return app


def main() -> None:
    build_app()()

"""The one error type of the weights package."""
from __future__ import annotations


class WeightsError(Exception):
    """A weights problem the user can act on; the message is one line."""

    def __init__(self, message: str) -> None:
        # Keep messages to one line: they are shown as-is by the CLI.
        super().__init__(" ".join(str(message).split()))


def force_hint(name: str) -> str:
    """What to run to replace a bad copy of ``name``."""
    return f"run `refrestore download-weights --force {name}`"

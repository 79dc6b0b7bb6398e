"""The user's own weight files, added as named models (``download-weights NAME --from-file FILE``).

Such a file is checked by a strict load into the network it stands in for (``architectures``),
so this room sits above the detectors, parsers, identity models and restorers whose networks it
builds; ``add`` then installs it in the weight store (``refrestore/weights/``, below them all).
"""
from __future__ import annotations

from .add import UserAdded, add_user_file
from .architectures import check_architecture

__all__ = ["UserAdded", "add_user_file", "check_architecture"]

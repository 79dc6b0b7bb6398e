"""refrestore: reference-guided face restoration for old photos."""
from __future__ import annotations

__version__ = "0.1.0"

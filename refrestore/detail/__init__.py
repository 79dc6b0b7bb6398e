"""The reference detail stage: the person's own photos' fine detail, added to a restored face
where the references agree (``stage.DetailStage``). It imports nothing above it: the pipeline
and ``refrestore eval`` call it for any restorer's output on faces that have references."""
from __future__ import annotations

from .stage import DEFAULT_FIDELITY, DetailOptions, DetailResult, DetailStage

__all__ = ["DEFAULT_FIDELITY", "DetailOptions", "DetailResult", "DetailStage"]

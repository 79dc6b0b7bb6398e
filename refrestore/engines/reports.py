"""What a run says about each image, the run's summary, and the JSON report file."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path



@dataclass
class ImageReport:
    input: str
    output: str | None
    status: str  # ok | no_faces | error | skipped
    error: str | None = None
    faces: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    copied: bool = False  # the output is the input's own bytes: no face needed anything
    # A skipped photo: its faces and warnings are what the run that made its output reported,
    # {"finished": when, "status": ok | no_faces} (``engines.earlier``); None otherwise.
    earlier: dict | None = None

    def to_json(self) -> dict:
        return {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "error": self.error,
            "faces": self.faces,
            "warnings": self.warnings,
            "copied": self.copied,
            "earlier": self.earlier,
        }

    @classmethod
    def from_json(cls, data: dict, seconds: float = 0.0) -> "ImageReport":
        return cls(data["input"], data["output"], data["status"], data["error"], list(data["faces"]), list(data["warnings"]), seconds,
                   bool(data.get("copied", False)), data.get("earlier"))


@dataclass
class BatchSummary:
    images: list[ImageReport] = field(default_factory=list)
    interrupted: bool = False
    fatal: str | None = None

    def counts(self) -> Counter:
        return Counter(r.status for r in self.images)

    def failure_reasons(self) -> Counter:
        return Counter((r.error or "").split(":")[0] for r in self.images if r.status == "error")

    @property
    def failed(self) -> bool:
        return any(r.status == "error" for r in self.images) or self.fatal is not None


def error_text(exc: BaseException) -> str:
    """One line for the report."""
    from ..imageio import ImageReadError, ImageWriteError  # numpy: not on every start of fix

    if isinstance(exc, (ImageReadError, ImageWriteError)):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, MemoryError):
        return "out of memory while processing this image"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def write_report(path: Path, summary: BatchSummary, extra: dict | None = None) -> None:
    """The JSON report, written atomically."""
    data = {"images": [r.to_json() for r in summary.images], "interrupted": summary.interrupted}
    if extra:
        data.update(extra)
    from ..report.json import write_text_atomic

    # The same writer as the CLI's reports: mode 0666 & ~umask like any file the user makes
    # (mkstemp's 0600 hid the report from the user's group), temp files a rerun can clean.
    write_text_atomic(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")

"""What ``refrestore fix`` was asked to do, as one typed object (below the local and Ray runs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .common import Verbosity


@dataclass(frozen=True)
class FixRequest:
    """Everything ``refrestore fix`` was asked to do, typed; built once from the command line."""

    inputs: list[Path]
    uris: tuple[str, ...] = ()  # inputs on other filesystems (s3://, gs://, file://): --engine ray
    output_uri: str | None = None  # -o on another filesystem
    refs: list[Path] = field(default_factory=list)
    ref: Path | None = None
    person: Path | None = None  # --person DIR: the one person these photos show
    output: Path | None = None
    output_is_folder: bool = False  # -o ended in a slash: a folder even when named like a file
    aligned: bool = False
    model: str = "auto"
    detector: str = "auto"
    device: str = "auto"
    upscale: int = 1
    strength: float = 1.0
    fidelity: float | None = None
    reference_detail: bool = True
    only_center_face: bool = False
    save_faces: bool = False
    compare: bool = False
    json_report: Path | None = None
    html_report: Path | None = None
    recursive: bool = False
    skip_existing: bool = True
    offline: bool = False
    download: bool = False
    top_k: int = 3
    jobs: int = 2
    prefetch: int = 2
    max_pixels: int | None = None
    weights_dir: Path | None = None
    manifest: Path | None = None
    verbosity: Verbosity = Verbosity.NORMAL
    engine: str = "local"  # local | ray
    ray_address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    report_mode: int | None = None  # the reports' permission bits follow the most private input

    @property
    def debug(self) -> bool:
        return self.verbosity >= Verbosity.DEBUG

    @property
    def quiet(self) -> bool:
        return self.verbosity <= Verbosity.QUIET

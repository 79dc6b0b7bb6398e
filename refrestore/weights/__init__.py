"""Model weights: the manifest, the local store, the downloader and safe loading."""
from __future__ import annotations

from .choose import preferred
from .download import DownloadEvent, ProgressCallback, download, mirror_url
from .errors import WeightsError
from .loading import load_state_dict
from .manifest import (
    ROLES,
    Manifest,
    ManifestEntry,
    check_file_name,
    default_manifest_path,
    load_manifest,
)
from .store import FileStatus, WeightStore, sha256_file

__all__ = [
    "ROLES",
    "DownloadEvent",
    "FileStatus",
    "Manifest",
    "ManifestEntry",
    "ProgressCallback",
    "WeightStore",
    "WeightsError",
    "check_file_name",
    "default_manifest_path",
    "download",
    "load_manifest",
    "load_state_dict",
    "mirror_url",
    "preferred",
    "sha256_file",
]

"""Model weights: the manifest, the local store, the downloader and safe loading.

Names are imported on first use: the downloader pulls in requests and the loader torch,
and ``refrestore --help`` should pay for neither.
"""
from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any

_EXPORTS = {
    "preferred": "choose",
    "DownloadEvent": "download",
    "ProgressCallback": "download",
    "download": "download",
    "mirror_url": "download",
    "WeightsError": "errors",
    "load_state_dict": "loading",
    "ROLES": "manifest",
    "Manifest": "manifest",
    "ManifestEntry": "manifest",
    "check_file_name": "manifest",
    "default_manifest_path": "manifest",
    "load_manifest": "manifest",
    "FileStatus": "store",
    "WeightStore": "store",
    "sha256_file": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'refrestore.weights' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


class _Package(types.ModuleType):
    """The submodule ``download`` has the name of its function: when the import system binds
    the submodule to this package, the function is bound instead, as an eager import did."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "download" and isinstance(value, types.ModuleType):
            value = value.download
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

"""Where refrestore keeps its files: weights, caches, and the packaged models folder.

Everything lives under one home folder, the platformdirs user data dir for refrestore,
or ``REFRESTORE_HOME`` when set, so nothing is ever written into site-packages or the
working directory.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import platformdirs

APP_NAME = "refrestore"
ENV_HOME = "REFRESTORE_HOME"
ENV_OFFLINE = "REFRESTORE_OFFLINE"


def home_dir() -> Path:
    """The refrestore home folder (not created)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def weights_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding downloaded weights; ``override`` is a one-run ``--dir``."""
    if override is not None:
        return Path(override).expanduser()
    return home_dir() / "weights"


def cache_dir() -> Path:
    """Folder for rebuildable caches (the gallery index)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser() / "cache"
    return platformdirs.user_cache_path(APP_NAME, appauthor=False)


def models_dir() -> Path:
    """The packaged ``models/`` folder: manifest, model cards and embedded weights."""
    return Path(str(resources.files("refrestore.models")))


def offline_from_env() -> bool:
    """True when ``REFRESTORE_OFFLINE`` asks that no network be used."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}

"""Packaged model files: ``manifest.toml``, model cards and the embedded default weights."""

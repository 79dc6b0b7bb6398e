"""A small private tmpfs for disk-limit tests: a real full disk or read-only file system,
visible only to the command run under it (a mount namespace), gone when that command exits."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def tmpfs_prefix(mountpoint: Path, options: str) -> list[str]:
    """The command prefix that runs a command with a tmpfs mounted on ``mountpoint``.

    ``options`` are tmpfs mount options (``size=256k``, ``ro,size=64k``). Skips the test with
    the reason when no mount namespace can be made here (no unshare, no permission)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare not available")
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]  # non-root: a user namespace
    probe = subprocess.run([unshare, *userns, "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace here: {probe.stderr.decode().strip()}")
    setup = f'mount -t tmpfs -o {options} tmpfs "$0" && exec "$@"'
    return [unshare, *userns, "--mount", "--propagation", "private", "sh", "-c", setup, str(mountpoint)]

"""Run a command whose stderr is a real terminal (a pty), as for a user at a shell."""
from __future__ import annotations

import os
import pty
import subprocess


def run_on_a_terminal(cmd: list[str], env: dict[str, str], timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """(the finished process, everything it drew on the terminal). stdout stays a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=timeout)
    os.close(master)
    return proc, b"".join(chunks).decode("utf-8", "replace")

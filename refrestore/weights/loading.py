"""Reading weights files without unpickling arbitrary objects."""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import WeightsError, force_hint

log = logging.getLogger(__name__)

# Keys under which training frameworks nest the actual state dict, in preference order
# (BasicSR saves EMA weights under params_ema next to params).
WRAPPER_KEYS: tuple[str, ...] = ("params_ema", "params", "state_dict", "model")


def load_state_dict(path: Path, name: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt``/``.ckpt`` (weights_only) or ``.safetensors`` file, on CPU.

    Common wrappers are unwrapped when they hold a dict. Any failure raises a one-line
    WeightsError naming the file and the command that replaces it (``name`` defaults to the
    file name).
    """
    path = Path(path)
    name = name or path.name
    try:
        # a FIFO or device in place of a weights file would block torch.load for ever
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise WeightsError(f"{path} is not a regular file; {force_hint(name)}")
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unusable file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(reason) > 160:
            reason = reason[:157] + "..."
        raise WeightsError(
            f"{path} cannot be read as weights ({type(exc).__name__}: {reason}); {force_hint(name)}"
        ) from None
    state = _unwrap(obj)
    if state is None:
        raise WeightsError(f"{path} holds no tensors; {force_hint(name)}")
    return state


def _unwrap(obj: object) -> dict[str, torch.Tensor] | None:
    for _ in range(4):  # wrappers nest at most a couple of levels in practice
        if not isinstance(obj, Mapping):
            return None
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        return None
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    dropped = len(obj) - len(tensors)
    if dropped:
        log.debug("ignored %d non-tensor entries", dropped)
    return tensors or None

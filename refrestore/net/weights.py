"""RefNet's weight files: exported inference weights and training checkpoints, read and loaded.

What ``fix`` needs from training's output lives here, apart from the training loop
(``train``), which writes these files: the runtime (``restorers.refnet``) imports this module
and the architecture only. torch only, like the trainer.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .arch import RefNet, RefNetConfig

CKPT_FORMAT = "refnet-ckpt-1"
WEIGHTS_FORMAT = "refnet-weights-1"
# The embedded weights (refnet-small), shipped inside the package: the restorer and the identity
# models' query preparation (identity.restored_queries) both load them.
EMBEDDED_WEIGHTS_FILE = "refnet_small.pth"


def embedded_weights_path() -> Path:
    from .. import paths

    return paths.models_dir() / EMBEDDED_WEIGHTS_FILE


def read_weights(path: Path) -> tuple[RefNetConfig, dict[str, torch.Tensor]]:
    """Config and fp32 state dict of exported weights or of a checkpoint's EMA (weights_only)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ValueError(f"{path} is not a readable RefNet weights file ({type(exc).__name__})") from exc
    if not isinstance(obj, dict) or obj.get("format") not in (WEIGHTS_FORMAT, CKPT_FORMAT):
        raise ValueError(f"{path} is not a RefNet weights file")
    sd = obj["state_dict"] if obj["format"] == WEIGHTS_FORMAT else obj["ema"]
    return (RefNetConfig.from_dict(obj["config"]),
            {k: v.float() if v.is_floating_point() else v for k, v in sd.items()})


def load_weights(path: Path, device: torch.device | str = "cpu") -> RefNet:
    """Build RefNet from exported weights or a training checkpoint (strict, weights_only)."""
    cfg, sd = read_weights(path)
    model = RefNet(cfg)
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()

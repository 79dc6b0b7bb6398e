"""refrestore's own small face-identity embedder (``models/faceid_small.pth``).

A residual CNN on a 64x64 crop of the FFHQ-aligned face, trained with a CosFace margin softmax
on the training people of ``shared/data/faces`` with degraded copies as positives (see
:mod:`refrestore.training.train_embedder`). It is used by the restoration network's identity loss and
by reference selection, so it imports only torch, numpy and OpenCV: it must run inside a
training loop on a bare GPU machine.

The forward takes (B, 3, H, W) RGB in [0, 1] on the FFHQ template at any size H, crops the
face area and resizes it to the network's input differentiably, and returns L2-normalised
(B, D) embeddings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "refrestore-faceid-1"
SHIPPED_PATH = Path(__file__).resolve().parents[2] / "models" / "faceid_small.pth"

# The face area of the FFHQ template as fractions of the crop (y0, y1, x0, x1): eyebrows to chin,
# cheek to cheek. Tighter than the ArcFace crop, because hair and background change between
# photos of one person and the aligned crop's reflected edges carry no identity.
FACE_BOX = (0.20, 0.84, 0.18, 0.82)


@dataclass(frozen=True)
class EmbedderConfig:
    input_size: int = 64
    widths: tuple[int, ...] = (32, 64, 96, 128)
    blocks: tuple[int, ...] = (1, 2, 2, 1)
    dim: int = 128
    face_box: tuple[float, float, float, float] = FACE_BOX

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "EmbedderConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class _Block(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv twice); stride 2 on the first of a stage."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.skip = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x))
        skip = x if self.skip is None else self.skip(h)
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h)))
        return skip + h


class FaceEmbedder(nn.Module):
    """64x64 face crop -> 128-d unit embedding. About 0.9 M parameters."""

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        super().__init__()
        self.config = config or EmbedderConfig()
        c = self.config
        self.stem = nn.Conv2d(3, c.widths[0], 3, 2, 1, bias=False)  # 64 -> 32
        layers: list[nn.Module] = []
        cin = c.widths[0]
        for i, (w, n) in enumerate(zip(c.widths, c.blocks)):
            for j in range(n):
                layers.append(_Block(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.body = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        side = c.input_size // 2 ** len(c.widths)
        # Flatten + linear (as ArcFace's output layer) keeps where a feature is on the face,
        # which global pooling would throw away.
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Flatten(), nn.Linear(cin * side * side, c.dim),
                                  nn.BatchNorm1d(c.dim))
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The face box of aligned (B, 3, H, W) faces at the network's input size, differentiably."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        y0, y1, x0, x1 = self.config.face_box
        face = x[:, :, round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)]
        s = self.config.input_size
        if face.shape[-2:] == (s, s):
            return face
        # Antialiased bilinear: a 512 crop is reduced ~5x, and plain bilinear would alias.
        return F.interpolate(face, size=(s, s), mode="bilinear", align_corners=False,
                             antialias=face.shape[-1] > s)

    def features(self, face: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings of crops already at the input size (training uses this)."""
        h = self.body(self.stem((face - self.mean) / 0.5))
        return self.head(F.relu(self.bn(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(self.crop(x)), dim=1)


@dataclass
class EmbedderFile:
    """What ``faceid_small.pth`` holds besides the weights."""

    config: EmbedderConfig
    meta: dict = field(default_factory=dict)


def save_embedder(model: FaceEmbedder, path: Path, meta: dict, half: bool = True) -> None:
    """Write the shipped format: format, config, fp16 state_dict, meta (written atomically)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": state, "meta": meta}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def read_embedder(path: Path | None = None) -> tuple[FaceEmbedder, EmbedderFile]:
    path = Path(path) if path is not None else SHIPPED_PATH
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a refrestore face-identity file (format {FORMAT})")
    config = EmbedderConfig.from_dict(blob["config"])
    model = FaceEmbedder(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    model.load_state_dict(state, strict=True)
    return model, EmbedderFile(config=config, meta=dict(blob.get("meta", {})))


def load_embedder(path: Path | None = None, device: str | torch.device = "cpu") -> FaceEmbedder:
    """The embedder as a frozen eval module (``path=None``: the shipped ``models/faceid_small.pth``)."""
    model, _ = read_embedder(path)
    model.eval().requires_grad_(False)
    return model.to(device)

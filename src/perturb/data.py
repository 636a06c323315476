"""Small datasets that ship inside PyPI packages, as tensors with a fixed split (no downloads at run time)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPLIT_SEED = 0  # the split is part of the dataset, not of the run: every seed and chapter sees the same test set


@dataclass
class Split:
    """Train and test tensors on one device. ``X`` rows are flattened images with values in [0, 1]."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple[int, int]
    num_classes: int

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]


PIXEL_RANGES = {"unit": (0.0, 1.0), "signed": (-1.0, 1.0)}  # classifiers use [0, 1]; diffusion chapters [-1, 1]


def digits(device: torch.device | str = "cpu", dtype=torch.float32, pixels: str = "unit"
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn 8x8 digits as ``(X, y)``: flattened rows, pixels mapped linearly from the stored
    integers 0..16 onto ``[0, 1]`` (``pixels="unit"``) or ``[-1, 1]`` (``"signed"``, the data range of the
    diffusion chapters). The book's one digits loader: :func:`load_digits` splits it, and
    :func:`perturb.diffusion.digits_gmm` fits it. Used by: dpm-solver-pp, momentum-diffusion-sampling.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    if pixels not in PIXEL_RANGES:
        raise ValueError(f"unknown pixel range {pixels!r}; accepted: {', '.join(PIXEL_RANGES)}")
    low, high = PIXEL_RANGES[pixels]
    data = sklearn_digits()
    X = torch.as_tensor(low + (high - low) * data.data / 16.0, dtype=dtype, device=device)
    return X, torch.as_tensor(data.target, dtype=torch.long, device=device)


def load_digits(device: torch.device | str = "cpu", test_fraction: float = 0.3) -> Split:
    """The digits of :func:`digits` with pixels in [0, 1], split into train and test, stratified by class.

    Used by: crown-bound-propagation (and the robustness and explanation chapters that need a small image task).
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    X, y = digits("cpu", torch.float32, "unit")
    X, y = X.numpy(), y.numpy()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, stratify=y, random_state=SPLIT_SEED)
    as_tensor = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return Split(as_tensor(X_train), as_tensor(y_train), as_tensor(X_test), as_tensor(y_test), (8, 8), 10)


@dataclass
class ObjectImages:
    """Train and test images with the pixel mask of the object they show.

    ``X_*`` are images of shape ``(n, 1, image_size, image_size)`` with values in [0, 1]; ``object_*`` are boolean
    tensors of the same shape, True on the object's pixels (the ground truth that explanation chapters score
    against); ``y_*`` are the class labels.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    object_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    object_test: torch.Tensor
    image_size: int
    num_classes: int


def textured_digits(device: torch.device | str = "cpu", upsample: int = 2, canvas_size: int = 24,
                    background_max: float = 0.35, object_threshold: float = 0.3,
                    test_fraction: float = 0.3) -> ObjectImages:
    """The split of :func:`load_digits`, each digit enlarged ``upsample`` times (nearest neighbour) and laid over
    a ``canvas_size`` x ``canvas_size`` background of independent uniform noise on ``[0, background_max]`` at a
    random position, so that no single colour (black, grey, the mean) is what the background looks like and
    there is background to mask away from the object. The object mask is the set of pixels where the digit is
    brighter than ``object_threshold``; the image is the larger of digit and background at every pixel.

    The background noise and the positions are part of the dataset (drawn once from :data:`SPLIT_SEED`), not of the run.
    Used by: layer-masking (missingness bias of colour masking against layer masking), and the explanation
    chapters that score attributions against a known object mask.
    """
    if upsample < 1 or canvas_size < 8 * upsample:
        raise ValueError(f"need upsample >= 1 and canvas_size >= 8 * upsample, got {upsample}, {canvas_size}")
    if not 0.0 <= background_max < 1.0 or not 0.0 < object_threshold < 1.0:
        raise ValueError("background_max must lie in [0, 1) and object_threshold in (0, 1)")
    split = load_digits("cpu", test_fraction)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    parts = []
    for X in (split.X_train, split.X_test):
        small = X.reshape(-1, 1, 8, 8).repeat_interleave(upsample, 2).repeat_interleave(upsample, 3)
        side, room = small.shape[-1], canvas_size - small.shape[-1]
        offsets = torch.randint(0, room + 1, (len(X), 2), generator=generator)
        digit = torch.zeros(len(X), 1, canvas_size, canvas_size)
        for i, (row, col) in enumerate(offsets.tolist()):
            digit[i, :, row:row + side, col:col + side] = small[i]
        background = background_max * torch.rand(digit.shape, generator=generator)
        parts.append((torch.maximum(digit, background).to(device), (digit > object_threshold).to(device)))
    (X_train, object_train), (X_test, object_test) = parts
    return ObjectImages(X_train, split.y_train.to(device), object_train, X_test, split.y_test.to(device),
                        object_test, canvas_size, 10)

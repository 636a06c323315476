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


def load_digits(device: torch.device | str = "cpu", test_fraction: float = 0.3) -> Split:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), scaled to [0, 1], stratified split.

    Used by: crown-bound-propagation (and the robustness and explanation chapters that need a small image task).
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    digits = sklearn_digits()
    X = (digits.data / 16.0).astype(np.float32)  # pixel intensities are integers 0..16
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, stratify=y, random_state=SPLIT_SEED)
    as_tensor = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return Split(as_tensor(X_train), as_tensor(y_train), as_tensor(X_test), as_tensor(y_test), (8, 8), 10)

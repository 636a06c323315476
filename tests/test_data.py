"""`perturb.data.textured_digits`: digits on a noise background with their exact object masks."""
import pytest
import torch

from perturb import data


def test_textured_digits_shapes_masks_and_background():
    images = data.textured_digits()
    split = data.load_digits()
    assert images.X_train.shape == (len(split.y_train), 1, 24, 24)
    assert images.X_test.shape == (len(split.y_test), 1, 24, 24)
    assert torch.equal(images.y_train, split.y_train) and torch.equal(images.y_test, split.y_test)
    assert images.object_test.dtype == torch.bool and images.object_test.shape == images.X_test.shape
    assert images.image_size == 24 and images.num_classes == 10
    assert 0.0 <= images.X_train.min() and images.X_train.max() <= 1.0
    # off the object the image is background noise, on it the digit (brighter than the threshold)
    background = images.X_test[~images.object_test]
    assert background.max() <= 0.35 + 1e-6 and background.std() > 0.05
    assert images.X_test[images.object_test].min() > 0.3
    # every object pixel comes from the enlarged 8x8 digit: its pixel count is a multiple of upsample**2
    assert ((images.object_test.sum(dim=(1, 2, 3)) % 4) == 0).all()


def test_textured_digits_is_a_fixed_dataset_and_places_digits_at_several_positions():
    first, second = data.textured_digits(), data.textured_digits()
    assert torch.equal(first.X_test, second.X_test) and torch.equal(first.object_train, second.object_train)
    rows = first.object_test.any(dim=3)[:, 0].float().argmax(dim=1)      # first object row per image
    assert len(torch.unique(rows)) > 4


def test_textured_digits_options_and_errors():
    small = data.textured_digits(upsample=1, canvas_size=8)
    assert small.X_test.shape[-1] == 8
    with pytest.raises(ValueError):
        data.textured_digits(upsample=2, canvas_size=12)
    with pytest.raises(ValueError):
        data.textured_digits(object_threshold=1.5)

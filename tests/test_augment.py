"""Views: seeded per (seed, image, view), pixel ops at native size, resize last."""
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from brcd import augment
from brcd.augment import (
    augment_batch,
    augment_view,
    clean_batch,
    clean_view,
    render_view,
    rotated_batch,
    rotated_view,
    view_params,
)

torch.set_num_threads(1)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(count=6, height=28, width=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _resize_and_normalise(pixels: np.ndarray, size: int) -> torch.Tensor:
    """The final step written independently: bilinear + antialias resize, then normalise."""
    x = torch.from_numpy(pixels)[None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


@pytest.mark.parametrize("shape", [(28, 28), (90, 70)])
def test_same_native_pixels_at_every_size(shape):
    """Teacher (64 px) and student (32 px) views are one native view resized twice."""
    image = _images(1, *shape)[0]
    for view in range(6):
        native = render_view(image, seed=7, index=123, view=view)
        assert native.dtype == np.float32 and native.shape[0] == 3
        assert native.shape[1] <= shape[0] and native.shape[2] <= shape[1]
        for size in (32, 64):
            ours = augment_view(image, 7, 123, view, size, MEAN, STD)
            assert ours.shape == (3, size, size)
            assert torch.allclose(ours, _resize_and_normalise(native, size), atol=1e-5)


def test_views_are_a_pure_function_of_seed_index_view():
    image = _images(1)[0]
    first = augment_view(image, 3, 10, 2, 32, MEAN, STD)
    np.random.seed(999)
    torch.manual_seed(999)
    np.random.random(17)
    assert torch.equal(first, augment_view(image, 3, 10, 2, 32, MEAN, STD))
    for other in [(3, 10, 3), (4, 10, 2), (3, 11, 2)]:
        assert not torch.equal(first, augment_view(image, *other, 32, MEAN, STD))
    assert view_params(28, 28, 3, 10, 2) == view_params(28, 28, 3, 10, 2)


def test_parameter_ranges_and_rates():
    params = [view_params(28, 28, 0, index, 0) for index in range(3000)]
    area = np.array([p.height * p.width / 28**2 for p in params])
    assert area.min() >= 0.45 and area.max() <= 1.0  # scale 0.5-1 up to rounding to whole pixels
    assert all(0 <= p.top <= 28 - p.height and 0 <= p.left <= 28 - p.width for p in params)
    rates = {name: np.mean([getattr(p, name) for p in params]) for name in ("flip", "jitter", "grayscale", "blur")}
    assert rates == pytest.approx({"flip": 0.5, "jitter": 0.7, "grayscale": 0.2, "blur": 0.5}, abs=0.04)
    assert all(0.6 <= p.brightness <= 1.4 and 0.6 <= p.contrast <= 1.4 and 0.6 <= p.saturation <= 1.4 for p in params)
    assert all(-0.1 <= p.hue <= 0.1 and 0.1 <= p.sigma <= 2.0 for p in params)
    assert len({p.jitter_order for p in params}) == 24  # every order of the four jitter ops
    assert all(sorted(p.jitter_order) == [0, 1, 2, 3] for p in params)


def test_pixel_ops_follow_torchvision_definitions():
    x = np.random.default_rng(1).random((3, 13, 17), dtype=np.float32)
    x[:, 2, 2] = 0.4  # a gray pixel: hue undefined
    x[0, 3, 3] = x[1, 3, 3]  # a tie between channels
    t = torch.from_numpy(x.copy())
    pairs = [
        (augment.adjust_brightness(x, 1.3), TF.adjust_brightness(t, 1.3)),
        (augment.adjust_contrast(x, 0.7), TF.adjust_contrast(t, 0.7)),
        (augment.adjust_saturation(x, 1.4), TF.adjust_saturation(t, 1.4)),
        (augment.adjust_hue(x, 0.08), TF.adjust_hue(t, 0.08)),
        (augment.adjust_hue(x, -0.1), TF.adjust_hue(t, -0.1)),
        (augment.to_grayscale(x), TF.rgb_to_grayscale(t, num_output_channels=3)),
        (augment.gaussian_blur3(x, 0.7), TF.gaussian_blur(t, [3, 3], [0.7, 0.7])),
    ]
    for ours, reference in pairs:
        np.testing.assert_allclose(ours, reference.numpy(), atol=2e-6)


def test_clean_view_resizes_and_normalises():
    image = np.full((20, 24, 3), 255, dtype=np.uint8)
    view = clean_view(image, 32, MEAN, STD)
    expected = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert view.shape == (3, 32, 32)
    assert torch.allclose(view, expected[:, None, None].expand(3, 32, 32), atol=1e-5)


def test_batches_equal_single_views():
    images = _images(5)
    indices, views = [4, 9, 1, 30, 2], [0, 1, 2, 3, 0]
    batch = augment_batch(images, 5, indices, views, 32, MEAN, STD)
    singles = torch.stack([augment_view(im, 5, i, v, 32, MEAN, STD) for im, i, v in zip(images, indices, views)])
    assert torch.allclose(batch, singles, atol=1e-6)
    assert torch.equal(augment_batch(images, 5, indices, 1, 32, MEAN, STD)[3], augment_view(images[3], 5, 30, 1, 32, MEAN, STD))
    clean = torch.stack([clean_view(im, 40, MEAN, STD) for im in images])
    assert torch.allclose(clean_batch(images, 40, MEAN, STD), clean, atol=1e-6)
    mixed = [images[0], _images(1, 30, 20)[0]]  # shapes differ: no single stack
    assert torch.allclose(clean_batch(mixed, 32, MEAN, STD)[1], clean_view(mixed[1], 32, MEAN, STD), atol=1e-6)


def test_rotated_views():
    image = _images(1, 28, 28)[0]
    clean = clean_view(image, 32, MEAN, STD)
    assert torch.equal(rotated_view(image, 0, 32, MEAN, STD), clean)
    assert torch.equal(rotated_view(image, 4, 32, MEAN, STD), clean)
    quarter = rotated_view(image, 1, 32, MEAN, STD)
    assert torch.equal(quarter, torch.rot90(clean, 1, dims=(1, 2)))
    assert torch.equal(rotated_view(image, 3, 32, MEAN, STD), torch.rot90(quarter, 2, dims=(1, 2)))
    assert torch.allclose(rotated_batch(image[None], 1, 32, MEAN, STD)[0], quarter, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        augment_view(np.zeros((8, 8, 3), dtype=np.float32), 0, 0, 0, 16, MEAN, STD)
    with pytest.raises(ValueError, match=">= 0"):
        view_params(8, 8, 0, -1, 0)
    with pytest.raises(ValueError, match="expected 3 values, got 2"):
        augment_batch(_images(3), 0, [0, 1], 0, 16, MEAN, STD)


def test_fast_enough_for_small_images():
    """Tens of thousands of 28 x 28 views must take well under a minute on one core."""
    images = _images(1000)
    start = time.process_time()
    augment_batch(images, 0, range(1000), 0, 32, MEAN, STD)
    per_view = (time.process_time() - start) / 1000
    assert per_view < 2e-3  # about 0.4 ms measured; 20,000 views in under 40 s even at the bound

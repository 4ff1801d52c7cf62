"""Invariants of the multi-stage augmentation: t2 acts on its own t1 view and never moves pixels."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torch.utils.data import default_collate
from torchvision.transforms import functional as F

from pretrain.config import get_default_config
from pretrain.data.augment import (
    CROP_ATTEMPTS,
    GaussianBlur,
    MultiStageViews,
    WeakViewsUint8,
    aggressive_transform,
    build_pretrain_transform,
    eval_transform,
    sample_crop_box,
    to_normalized_tensor,
    weak_transform,
)
from pretrain.methods import view_layout


def _image(width=48, height=40, seed=0):
    """A random RGB image: every crop and flip of it looks different."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def _cfg(**aug):
    cfg = get_default_config()
    cfg.DATA.IMAGE_SIZE = 32
    for key, value in aug.items():
        cfg.AUG[key] = value
    return cfg


def _identity(img):
    return img


def _views_as_pil(cfg, layout="multi_stage"):
    """MultiStageViews whose outputs stay PIL images, to compare views pixel by pixel."""
    return MultiStageViews(weak_transform(cfg), aggressive_transform(cfg), _identity, layout)


def _same(a, b):
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_pretrain_views_shapes_and_dtypes():
    torch.manual_seed(0)
    views = build_pretrain_transform(_cfg())(_image())
    assert len(views) == 4
    for view in views:
        assert view.shape == (3, 32, 32) and view.dtype == torch.float32


@pytest.mark.parametrize(
    "method,views,expected",
    [
        ("msr", "AA", 4),
        ("msr", "AW", 4),
        ("simsiam_msr", "AA", 4),
        ("byol", "AW", 2),
        ("byol", "AA", 2),
        ("simsiam", "AA", 2),
        ("simsiam", "AW", 2),
    ],
)
def test_number_of_views_follows_method(method, views, expected):
    cfg = _cfg()
    cfg.METHOD.NAME, cfg.METHOD.VIEWS = method, views
    torch.manual_seed(0)
    assert len(build_pretrain_transform(cfg)(_image())) == expected


def test_aa_layout_gives_the_two_aggressive_views():
    cfg = _cfg(GRAY_PROB=1.0, JITTER_PROB=0.0, BLUR_PROB=0.0)
    torch.manual_seed(3)
    both = _views_as_pil(cfg, "multi_stage")(_image())
    torch.manual_seed(3)
    aggressive_only = _views_as_pil(cfg, "aa")(_image())
    assert len(aggressive_only) == 2
    assert _same(aggressive_only[0], both[2]) and _same(aggressive_only[1], both[3])


def test_aw_layout_is_one_aggressive_and_one_weak_view_of_independent_crops():
    """The official BYOL-AW (TwoCropsTransform(aggressive, weak)): view 1 is t2(t1(x)), view 2 is t1'(x) alone."""
    cfg = _cfg(GRAY_PROB=1.0, JITTER_PROB=0.0, BLUR_PROB=0.0)
    torch.manual_seed(3)
    w1, w2, a1, _ = _views_as_pil(cfg, "multi_stage")(_image())
    torch.manual_seed(3)
    aggressive, weak = _views_as_pil(cfg, "aw")(_image())
    assert _same(aggressive, a1) and _same(
        aggressive, F.rgb_to_grayscale(w1, num_output_channels=3)
    )
    assert _same(
        weak, w2
    )  # the same draw as the multi-stage second weak view: t1 only, its own crop
    assert not _same(weak, w1) and not _same(
        F.rgb_to_grayscale(weak, num_output_channels=3), aggressive
    )


def test_view_layout_follows_method_and_views():
    cfg = _cfg()
    for method, views, expected in [
        ("msr", "AA", "multi_stage"),
        ("msr", "AW", "multi_stage"),
        ("simsiam_msr", "AW", "multi_stage"),
        ("byol", "AA", "aa"),
        ("byol", "AW", "aw"),
        ("simsiam", "AA", "aa"),
        ("simsiam", "AW", "aw"),
    ]:
        cfg.METHOD.NAME, cfg.METHOD.VIEWS = method, views
        assert view_layout(cfg) == expected, (method, views)
    assert get_default_config().METHOD.VIEWS == "AA"  # METHOD.NAME byol alone is standard BYOL


def test_aggressive_view_is_grayscale_of_its_own_weak_view():
    cfg = _cfg(GRAY_PROB=1.0, JITTER_PROB=0.0, BLUR_PROB=0.0)
    for seed in range(5):
        torch.manual_seed(seed)
        w1, w2, a1, a2 = _views_as_pil(cfg)(_image(seed=seed))
        assert a1.mode == "RGB" and a1.size == w1.size
        assert _same(a1, F.rgb_to_grayscale(w1, num_output_channels=3))
        assert _same(a2, F.rgb_to_grayscale(w2, num_output_channels=3))
        assert not _same(
            a1, F.rgb_to_grayscale(w2, num_output_channels=3)
        )  # not the other view's crop


def test_aggressive_view_equals_weak_view_when_t2_probabilities_are_zero():
    cfg = _cfg(GRAY_PROB=0.0, JITTER_PROB=0.0, BLUR_PROB=0.0)
    for seed in range(5):
        torch.manual_seed(seed)
        w1, w2, a1, a2 = _views_as_pil(cfg)(_image(seed=seed))
        assert _same(a1, w1) and _same(a2, w2)


def test_aggressive_view_shares_crop_with_full_t2():
    """With blur only, the aggressive view is a blur of the weak view, not of another crop."""
    cfg = _cfg(GRAY_PROB=0.0, JITTER_PROB=0.0, BLUR_PROB=1.0, BLUR_SIGMA=[1.0, 1.0])
    torch.manual_seed(0)
    w1, w2, a1, a2 = _views_as_pil(cfg)(_image())
    assert _same(a1, w1.filter(ImageFilter.GaussianBlur(radius=1.0)))
    assert _same(a2, w2.filter(ImageFilter.GaussianBlur(radius=1.0)))


def test_two_weak_views_differ():
    torch.manual_seed(0)
    w1, w2, _, _ = build_pretrain_transform(_cfg())(_image(64, 64))
    assert not torch.equal(w1, w2)


@pytest.mark.parametrize("aggressive_on", ["cpu", "device"])
def test_views_are_reproducible_under_a_seed(aggressive_on):
    transform = build_pretrain_transform(_cfg() if aggressive_on == "cpu" else _device_cfg())
    torch.manual_seed(7)
    first = transform(_image())
    torch.manual_seed(7)
    second = transform(_image())
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    torch.manual_seed(8)
    third = transform(_image())
    assert not all(torch.equal(a, b) for a, b in zip(first, third))


@pytest.mark.parametrize("size", [(32, 32), (17, 45), (96, 64)])
def test_t2_keeps_size_and_mode(size):
    cfg = _cfg(GRAY_PROB=0.5, JITTER_PROB=1.0, BLUR_PROB=1.0)
    t2 = aggressive_transform(cfg)
    torch.manual_seed(0)
    for seed in range(5):
        out = t2(_image(*size, seed=seed))
        assert out.size == size and out.mode == "RGB"


def test_weak_view_has_configured_size():
    torch.manual_seed(0)
    assert weak_transform(_cfg())(_image(100, 70)).size == (32, 32)


def test_blur_sigma_drawn_within_range():
    blur = GaussianBlur([0.1, 2.0])
    torch.manual_seed(0)
    sigmas = np.array([blur.sample_sigma() for _ in range(2000)])
    assert sigmas.min() >= 0.1 and sigmas.max() <= 2.0
    assert sigmas.min() < 0.2 and sigmas.max() > 1.9  # covers the range
    with pytest.raises(ValueError):
        GaussianBlur([0.0, 1.0])


def test_blur_uses_the_sampled_sigma(monkeypatch):
    seen = []
    real = ImageFilter.GaussianBlur

    def recording(radius):
        seen.append(radius)
        return real(radius=radius)

    monkeypatch.setattr(ImageFilter, "GaussianBlur", recording)
    blur = GaussianBlur([0.5, 1.5])
    torch.manual_seed(0)
    for _ in range(20):
        blur(_image())
    assert len(seen) == 20 and all(0.5 <= s <= 1.5 for s in seen)


def test_normalized_tensor_uses_mean_and_std():
    cfg = _cfg()
    img = Image.new("RGB", (4, 4), (255, 0, 128))
    out = to_normalized_tensor(cfg)(img)
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), cfg.DATA.MEAN, cfg.DATA.STD)]
    assert torch.allclose(out[:, 0, 0], torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize("size,image", [(32, (32, 32)), (64, (80, 60)), (224, (300, 260))])
def test_eval_transform_is_deterministic_with_right_shape(size, image):
    cfg = _cfg()
    cfg.DATA.IMAGE_SIZE = size
    transform = eval_transform(cfg)
    img = _image(*image)
    first, second = transform(img), transform(img)
    assert first.shape == (3, size, size) and torch.equal(first, second)


def test_eval_transform_is_identity_resize_at_32px():
    cfg = _cfg()
    img = _image(32, 32)
    assert torch.allclose(eval_transform(cfg)(img), to_normalized_tensor(cfg)(img))


def test_eval_size_keeps_stl10_at_its_native_96px():
    cfg = _cfg()
    cfg.DATA.IMAGE_SIZE, cfg.DATA.EVAL_SIZE = 64, 96
    img = _image(96, 96)
    out = eval_transform(cfg)(img)
    assert out.shape == (3, 96, 96) and torch.allclose(out, to_normalized_tensor(cfg)(img))
    cfg.DATA.EVAL_SIZE = 0
    assert eval_transform(cfg)(img).shape == (3, 64, 64)


@pytest.mark.parametrize("aggressive_on", ["cpu", "device"])
def test_grayscale_28px_images_become_3_channel_32px_views(aggressive_on):
    """Fashion-MNIST items are 28x28 mode-L images: every transform makes them RGB at the crop size."""
    cfg = _cfg(AGGRESSIVE_ON=aggressive_on)
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8))
    torch.manual_seed(0)
    for view in build_pretrain_transform(cfg)(gray):
        assert view.shape == (3, 32, 32)
        if view.dtype == torch.uint8:  # device mode: the raw weak views, gray in all three channels
            assert torch.equal(view[0], view[1]) and torch.equal(view[1], view[2])
    evaluated = eval_transform(cfg)(gray)
    assert evaluated.shape == (3, 32, 32)


# -- AUG.AGGRESSIVE_ON "device": the loader sends only the two weak views, as uint8 ---------------


def _device_cfg(method="msr", views="AW", **aug):
    cfg = _cfg(AGGRESSIVE_ON="device", **aug)
    cfg.METHOD.NAME, cfg.METHOD.VIEWS = method, views
    return cfg


@pytest.mark.parametrize(
    "method,views",
    [
        ("msr", "AW"),
        ("simsiam_msr", "AA"),
        ("byol", "AW"),
        ("byol", "AA"),
        ("simsiam", "AA"),
        ("simsiam", "AW"),
    ],
)
def test_device_mode_gives_two_uint8_weak_views_for_every_method(method, views):
    transform = build_pretrain_transform(_device_cfg(method, views))
    assert isinstance(transform, WeakViewsUint8)
    torch.manual_seed(0)
    out = transform(_image(48, 40))
    assert isinstance(out, tuple) and len(out) == 2
    for view in out:
        assert view.dtype == torch.uint8 and view.shape == (3, 32, 32)


@pytest.mark.parametrize("size", [32, 64])
def test_device_mode_view_shape_follows_image_size(size):
    cfg = _device_cfg()
    cfg.DATA.IMAGE_SIZE = size
    torch.manual_seed(0)
    for view in build_pretrain_transform(cfg)(_image(100, 90)):
        assert view.shape == (3, size, size) and view.dtype == torch.uint8


def test_device_mode_two_views_are_independent_crops():
    transform = build_pretrain_transform(_device_cfg())
    for seed in range(5):
        torch.manual_seed(seed)
        w1, w2 = transform(_image(64, 64, seed=seed))
        assert not torch.equal(w1, w2)


def test_device_mode_views_are_the_cpu_weak_views_unnormalised():
    """For the same crop box, the uint8 view normalised on the device equals the CPU path's normalised view."""
    cfg = _cfg()
    image = _image(seed=3)
    for seed in range(3):
        torch.manual_seed(seed)
        top, left, h, w = sample_crop_box(
            48, 40, (0.2, 1.0), torch.rand(4 * CROP_ATTEMPTS + 1).tolist()
        )
        pil_view = F.resized_crop(image, top, left, h, w, [32, 32])
        torch.manual_seed(seed)
        uint8_view = WeakViewsUint8(32, (0.2, 1.0), flip_prob=0.0).view(image)
        assert torch.equal(uint8_view, F.pil_to_tensor(pil_view))
        mean = torch.tensor(cfg.DATA.MEAN).view(3, 1, 1)
        std = torch.tensor(cfg.DATA.STD).view(3, 1, 1)
        assert torch.allclose(
            (uint8_view.float() / 255 - mean) / std, to_normalized_tensor(cfg)(pil_view), atol=1e-6
        )


def test_device_mode_views_collate_into_uint8_batches():
    transform = build_pretrain_transform(_device_cfg())
    torch.manual_seed(0)
    batch = default_collate([(transform(_image(seed=i)), 0) for i in range(4)])
    (w1, w2), _ = batch
    assert w1.shape == w2.shape == (4, 3, 32, 32) and w1.dtype == w2.dtype == torch.uint8


def test_cpu_mode_is_unchanged_by_the_device_option():
    assert isinstance(build_pretrain_transform(_cfg(AGGRESSIVE_ON="cpu")), MultiStageViews)
    assert "WeakViewsUint8" in repr(build_pretrain_transform(_device_cfg()))


@pytest.mark.parametrize(
    "width, height, scale", [(40, 40, (0.2, 1.0)), (64, 30, (0.08, 1.0)), (9, 50, (0.5, 1.0))]
)
def test_device_mode_crop_boxes_follow_torchvision_random_resized_crop(width, height, scale):
    """Same distribution as RandomResizedCrop.get_params: area, aspect ratio, position, fallback (20000 boxes)."""
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    image = Image.new("RGB", (width, height))
    ours = np.array(
        [
            sample_crop_box(width, height, scale, torch.rand(4 * CROP_ATTEMPTS).tolist())
            for _ in range(20000)
        ],
        dtype=float,
    )
    theirs = np.array(
        [RandomResizedCrop.get_params(image, scale, (3 / 4, 4 / 3)) for _ in range(20000)],
        dtype=float,
    )
    for boxes in (ours, theirs):
        top, left, h, w = boxes.T
        assert (
            (top >= 0).all()
            and (left >= 0).all()
            and (top + h <= height).all()
            and (left + w <= width).all()
        )

    def stats(boxes):
        top, left, h, w = boxes.T
        area, log_ratio = h * w / (width * height), np.log(w / h)
        centre_y, centre_x = (top + h / 2) / height, (left + w / 2) / width
        return np.array(
            [
                np.quantile(v, q)
                for v in (area, log_ratio, centre_y, centre_x)
                for q in (0.1, 0.5, 0.9)
            ]
            + [area.mean(), log_ratio.mean()]
        )

    # sampling noise of these statistics over 20000 draws is below 0.01; a wrong rule moves them by more than 0.05
    assert np.abs(stats(ours) - stats(theirs)).max() < 0.03, (stats(ours), stats(theirs))


def test_device_mode_view_has_the_pixels_of_the_cpu_weak_view_for_its_box_and_flips_half_the_time():
    image = _image(48, 40)
    transform = WeakViewsUint8(32, (0.2, 1.0), 0.5)
    flips = 0
    for seed in range(400):
        torch.manual_seed(seed)
        draws = torch.rand(4 * CROP_ATTEMPTS + 1).tolist()
        top, left, h, w = sample_crop_box(48, 40, (0.2, 1.0), draws)
        expected = F.pil_to_tensor(F.resized_crop(image, top, left, h, w, [32, 32]))
        if draws[-1] < 0.5:
            expected, flips = expected.flip(-1), flips + 1
        torch.manual_seed(seed)
        assert torch.equal(transform.view(image), expected), seed
    assert 160 <= flips <= 240


@pytest.mark.parametrize("mode, size", [("RGB", 32), ("RGB", 224), ("L", 16)])
def test_normalized_tensor_equals_to_tensor_then_normalize(mode, size):
    from torchvision import transforms as T

    image = _image(size, size).convert(mode)
    mean, std = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) if mode == "RGB" else ([0.5], [0.5])
    cfg = get_default_config()
    cfg.DATA.MEAN, cfg.DATA.STD = mean, std
    ours = to_normalized_tensor(cfg)(image)
    reference = T.Compose([T.ToTensor(), T.Normalize(mean, std)])(image)
    assert ours.dtype == torch.float32 and ours.is_contiguous() and ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=0, atol=2e-6)

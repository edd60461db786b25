"""Training augmentation: flip, shift, zoom, rotation and brightness/contrast jitter."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agemetric import resolve
from agemetric.data.transforms import augment
from agemetric.errors import AgemetricError


def _bar(size: int = 33) -> torch.Tensor:
    """One image ``(1, 3, S, S)``: a bright horizontal bar through the centre."""
    image = torch.zeros(1, 3, size, size)
    image[:, :, size // 2 - 1 : size // 2 + 2, 4:-4] = 1.0
    return image


def _orientation(image: torch.Tensor) -> float:
    """The angle in degrees of the main axis of an image's brightness (second moments)."""
    w = image[0, 0].clamp_min(0)  # (S, S)
    s = w.shape[0]
    y, x = torch.meshgrid(torch.arange(s) - (s - 1) / 2, torch.arange(s) - (s - 1) / 2, indexing="ij")
    m = w.sum()
    cx, cy = (w * x).sum() / m, (w * y).sum() / m
    mxx, myy, mxy = (w * (x - cx) ** 2).sum(), (w * (y - cy) ** 2).sum(), (w * (x - cx) * (y - cy)).sum()
    return math.degrees(0.5 * math.atan2(2 * float(mxy), float(mxx - myy)))


def test_without_rotation_or_jitter_the_draws_are_those_of_the_plain_augmentation():
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = augment(x, torch.Generator().manual_seed(1))
    explicit = augment(x, torch.Generator().manual_seed(1), rotate=0.0, jitter=0.0)
    assert torch.equal(plain, explicit)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rotate=st.floats(5.0, 30.0))
def test_rotation_turns_the_image_by_at_most_the_given_angle(seed, rotate):
    bar = _bar()
    angles = []
    for i in range(4):
        g = torch.Generator().manual_seed(seed + i)
        out = augment(bar, g, flip=False, max_shift=0.0, scale=(1.0, 1.0), rotate=rotate)
        angles.append(abs(_orientation(out)))
    assert max(angles) <= rotate + 1.5  # interpolation blurs the bar a little
    assert _orientation(
        augment(bar, torch.Generator().manual_seed(seed), flip=False, max_shift=0.0, scale=(1.0, 1.0))
    ) == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), jitter=st.floats(0.05, 0.5))
def test_jitter_is_a_per_image_contrast_and_brightness_change_of_the_geometric_result(seed, jitter):
    x = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(seed))
    geometric = augment(x, torch.Generator().manual_seed(seed))  # the same geometric draws come first
    out = augment(x, torch.Generator().manual_seed(seed), jitter=jitter)
    for a, b in zip(geometric, out, strict=True):  # b = contrast * a + offset, per image
        design = torch.stack([a.flatten(), torch.ones(a.numel())], 1).double()  # (P, 2)
        fit = torch.linalg.lstsq(design, b.flatten().double().unsqueeze(1)).solution.flatten()
        residual = (design @ fit - b.flatten().double()).abs().max()
        assert residual < 1e-4 and 1 - jitter - 1e-4 <= fit[0] <= 1 + jitter + 1e-4


def test_the_augment_options_config_accepts_are_the_keywords_of_augment():
    import inspect

    from agemetric.config_checks import AUGMENT_OPTIONS

    assert AUGMENT_OPTIONS == set(list(inspect.signature(augment).parameters)[2:])  # after images, generator


def test_augment_options_are_checked_by_name():
    assert resolve("quick", sets=["augment_options.rotate=10"]).training.augment_options == {"rotate": 10}
    with pytest.raises(AgemetricError, match="augment_options: unknown option.*rot.*known: flip"):
        resolve("quick", sets=["augment_options.rot=10"])


def test_restyle_changes_about_the_share_asked_for_and_nothing_else():
    from agemetric.data.transforms import STYLES, restyle

    images = torch.randn(400, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    untouched = restyle(images, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(untouched, images)
    out = restyle(images, 0.5, torch.Generator().manual_seed(1))
    changed = (out != images).flatten(1).any(dim=1)  # (B,)
    assert out.shape == images.shape and 150 < int(changed.sum()) < 250
    assert torch.equal(out, restyle(images, 0.5, torch.Generator().manual_seed(1)))  # the generator decides
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert 15 < int(gray.sum()) < 55 and len(STYLES) == 6  # about one in six restyled is plain grayscale


def test_the_jpeg_style_keeps_the_picture_and_loses_fine_detail():
    from agemetric.data.transforms import STYLES, restyle

    ramp = torch.linspace(-2, 2, 32)
    smooth = (ramp[None, :] + ramp[:, None]).expand(3, 32, 32)  # a gradient: JPEG keeps it
    noise = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))  # detail: JPEG drops much of it
    images = torch.stack([smooth, noise] * 30)  # (60, 3, 32, 32)
    out = restyle(images, 1.0, torch.Generator().manual_seed(2))
    draws = torch.Generator().manual_seed(2)
    torch.rand(60, generator=draws)  # restyle draws which images, then which style
    jpeg = torch.randint(0, len(STYLES), (60,), generator=draws) == STYLES.index("jpeg")
    assert jpeg[0::2].any() and jpeg[1::2].any()
    for i in jpeg.nonzero().flatten().tolist():
        error = (out[i] - images[i]).abs().mean() / (images[i].amax() - images[i].amin())
        if i % 2 == 0:
            assert error < 0.02
        else:
            assert 0.03 < error and out[i].std() < 0.95 * images[i].std()


def test_augment_restyles_only_when_asked():
    from agemetric.data.transforms import augment

    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = augment(images, torch.Generator().manual_seed(3))
    assert torch.equal(plain, augment(images, torch.Generator().manual_seed(3), style=0.0))
    assert not torch.equal(plain, augment(images, torch.Generator().manual_seed(3), style=1.0))

"""Tensor-side preprocessing and augmentation (no per-image Python work)."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 ``(B, 3, H, W)`` scaled to [0, 1] then standardised.

    ``mean`` and ``std`` are 3 numbers each, or float32 tensors of 3 (e.g. buffers of a traced module).
    """
    m = mean if isinstance(mean, torch.Tensor) else torch.tensor(mean, dtype=torch.float32)
    s = std if isinstance(std, torch.Tensor) else torch.tensor(std, dtype=torch.float32)
    return (images.float() / 255.0 - m.view(1, 3, 1, 1)) / s.view(1, 3, 1, 1)


def augment(
    images: torch.Tensor,
    generator: torch.Generator,
    flip: bool = True,
    max_shift: float = 0.06,
    scale: tuple[float, float] = (0.92, 1.08),
    rotate: float = 0.0,
    jitter: float = 0.0,
    style: float = 0.0,
) -> torch.Tensor:
    """Random horizontal flip, shift, zoom and rotation per image, in one ``grid_sample`` call,
    then a random change of brightness and contrast, then (with ``style``) another photo's look.

    Args:
        images: float ``(B, 3, H, W)``.
        generator: the training loop's generator (keeps runs reproducible).
        flip: mirror half of the images.
        max_shift: largest shift as a fraction of the side (each axis).
        scale: range of the zoom factor.
        rotate: largest rotation in degrees, either way (0: none).
        jitter: largest relative change of contrast, and of brightness in units of the image's
            spread, either way (0: none).
        style: the share of images given the look of another kind of photo (0: none), each one
            of: grayscale, a colour cast on grayscale (a toned print), a low-resolution copy (1/2
            to 1/4 of the side), sensor noise / film grain, blur or JPEG compression (`restyle()`).

    Returns:
        float ``(B, 3, H, W)``.
    """
    b = images.shape[0]
    zoom = torch.empty(b).uniform_(*scale, generator=generator)  # (B,)
    sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    shift = torch.empty(b, 2).uniform_(-2 * max_shift, 2 * max_shift, generator=generator)  # (B, 2)
    theta = torch.zeros(b, 2, 3)  # (B, 2, 3) affine maps from output to input coordinates
    theta[:, 0, 0] = sign / zoom
    theta[:, 1, 1] = 1.0 / zoom
    if rotate:  # the rotation is drawn only when asked for, so runs without it draw as before
        angle = torch.empty(b).uniform_(-rotate, rotate, generator=generator).deg2rad()  # (B,)
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        theta[:, 0, 0], theta[:, 0, 1] = sign * cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sign * sin, cos
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    out = F.grid_sample(images, grid.to(images.dtype), padding_mode="border", align_corners=False)
    if jitter:
        contrast = torch.empty(b, 1, 1, 1).uniform_(1 - jitter, 1 + jitter, generator=generator)  # (B, 1, 1, 1)
        brightness = torch.empty(b, 1, 1, 1).uniform_(-jitter, jitter, generator=generator)  # (B, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        out = (out - mean) * contrast + mean + brightness * out.std(dim=(1, 2, 3), keepdim=True)
    if style:  # drawn only when asked for, so runs without it draw as before
        out = restyle(out, style, generator)
    return out


#: the looks `restyle()` gives
STYLES = ("grayscale", "toned", "low resolution", "noise", "blur", "jpeg")


def restyle(images: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Give about ``share`` of the images the look of another kind of photo, one of `STYLES`
    each, drawn at random (old prints, phone cameras, scans, pictures sent by message): the face
    stays, the style goes. Grayscale; grayscale with a colour cast (sepia and other toned prints);
    a copy at 1/2 to 1/4 of the side scaled back up; sensor noise or film grain; a Gaussian blur
    (sigma 0.5 to 1.5 pixels); JPEG compression at quality 10 to 40 (Pillow's codec).

    Args:
        images: normalised float ``(B, 3, H, W)``.
        share: the probability that an image is restyled.
        generator: the training loop's generator.

    Returns:
        float ``(B, 3, H, W)``.
    """
    import torchvision.transforms.v2.functional as TF  # here: importing torchvision costs a second

    b, _, h, w = images.shape
    chosen = torch.rand(b, generator=generator) < share  # (B,)
    kind = torch.randint(0, len(STYLES), (b,), generator=generator)  # (B,)
    gray = images.mean(dim=1, keepdim=True).expand_as(images)  # (B, 3, H, W)
    toned = gray + torch.empty(b, 3, 1, 1).uniform_(-0.3, 0.3, generator=generator)  # a cast per image
    factor = int(torch.randint(2, 5, (1,), generator=generator))  # one size per batch: 1/2 to 1/4
    small = F.interpolate(images, size=(max(1, h // factor), max(1, w // factor)), mode="bilinear", antialias=True)
    low = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)  # (B, 3, H, W)
    grain = torch.empty(b, 1, 1, 1).uniform_(0.05, 0.25, generator=generator)  # (B, 1, 1, 1) noise level
    noisy = images + grain * torch.randn(images.shape, generator=generator)
    sigma = float(torch.empty(1).uniform_(0.5, 1.5, generator=generator))  # one blur per batch
    blurred = TF.gaussian_blur(images, kernel_size=[5, 5], sigma=[sigma, sigma])
    quality = int(torch.randint(10, 41, (1,), generator=generator))  # one quality per batch
    styled = torch.stack([gray, toned, low, noisy, blurred, images])[kind, torch.arange(b)]  # (B, 3, H, W)
    compressed = chosen & (kind == STYLES.index("jpeg"))  # (B,) the codec runs only on these
    if compressed.any():
        styled[compressed] = _jpeg(images[compressed], quality)
    return torch.where(chosen[:, None, None, None], styled, images)


def _jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """``images`` (float ``(B, 3, H, W)``) through Pillow's JPEG codec at ``quality``: each image's
    range is mapped to 0-255 for the codec and back."""
    low = images.amin(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    span = (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-6)  # (B, 1, 1, 1)
    pixels = ((images - low) / span * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    decoded = []
    for picture in pixels:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="JPEG", quality=quality)
        decoded.append(np.asarray(Image.open(buffer).convert("RGB")))
    back = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
    return back.float() / 255 * span + low

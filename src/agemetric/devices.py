"""Where a model runs and in which precision: the bfloat16 policy that training, estimation and
the run's first line share."""

from __future__ import annotations

import torch


def bf16_supported(device: str = "cpu") -> bool:
    """True when ``device`` (``"cpu"`` or ``"cuda"``) runs bfloat16 matrix maths natively
    (CPU: AVX512-BF16 or AMX; GPU: Ampere or newer)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check and check()) or (amx and amx()))


def uses_bf16(setting: str, device: str) -> bool:
    """Whether the ``bf16`` setting (``"auto"``, ``"on"`` or ``"off"``) means bfloat16 autocast on
    ``device`` (a device type, ``"cpu"`` or ``"cuda"``): ``"auto"`` where it is native."""
    return bf16_supported(device) if setting == "auto" else setting == "on"

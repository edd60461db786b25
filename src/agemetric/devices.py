"""Where a model runs and in which precision: the bfloat16 policy that training, estimation and
the run's first line share."""

from __future__ import annotations

from copy import deepcopy

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


def flush_subnormals(module: torch.nn.Module) -> int:
    """Set the subnormal numbers among ``module``'s floating-point parameters and buffers (nonzero,
    smaller in magnitude than float32's smallest normal number, about 1.2e-38) to zero, in place;
    returns how many there were. Such a weight contributes nothing a float32 sum can hold, but a
    CPU multiplies by it through a slow path: a pretrained network with a few thousand of them ran
    ten times slower in float32."""
    flushed = 0
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                tiny = tensor.abs() < torch.finfo(tensor.dtype).tiny
                tiny &= tensor != 0
                flushed += int(tiny.sum())
                tensor.masked_fill_(tiny, 0)
    return flushed


class Bf16Copy:
    """Keeps a copy of a module whose convolution and linear weights are bfloat16 already, to
    estimate with under bfloat16 autocast: autocast casts those weights to the same bfloat16
    numbers on every call, which on a small batch costs a fifth of the network's time. The outputs
    are the same; the copy is remade when a parameter or buffer of the module changes (in place,
    or moved to another device).

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
        >>> x = torch.rand(2, 3, 8, 8)
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     torch.equal(Bf16Copy()(net)(x), net(x))
        True
    """

    _LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)

    def __init__(self):
        self._made: tuple[tuple, torch.nn.Module] | None = None

    def __call__(self, module: torch.nn.Module) -> torch.nn.Module:
        """The copy of ``module`` as it is now."""
        key = tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))
        if self._made is None or self._made[0] != key:
            copy = deepcopy(module)
            for layer in copy.modules():
                if isinstance(layer, self._LAYERS):
                    layer.to(torch.bfloat16)
            self._made = (key, copy)
        return self._made[1]

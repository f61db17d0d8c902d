"""The seed's image augmentation, on the device."""

from __future__ import annotations

import torch


def augment(frames: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """The seed's augmentation per window, on the device, each step clipped and truncated.

    Brightness x U(0.7, 1.3) with chance `p`, then contrast about 128 x U(0.7, 1.3) likewise.
    """
    b = frames.shape[0]
    x = frames.float()
    shape = (b,) + (1,) * (x.dim() - 1)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        on = torch.rand(b, generator=gen, device=gen.device) < p
        factor = torch.rand(b, generator=gen, device=gen.device) * 0.6 + 0.7
        return on.view(shape), factor.view(shape)

    on, bright = draw()
    x = torch.where(on, (x * bright).clamp(0, 255).floor(), x)
    on, contrast = draw()
    return torch.where(on, (128 + contrast * x - contrast * 128).clamp(0, 255).floor(), x)

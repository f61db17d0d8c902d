"""Encoders for `csdm encode` tests: factories that return the same weights on every call."""

from __future__ import annotations

import torch


class TinyEncoder(torch.nn.Module):
    """(B, 3, h, w) to (B, 4, h/4, w/4): one strided convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def tiny() -> torch.nn.Module:
    """The tiny encoder with seeded weights."""
    torch.manual_seed(0)
    return TinyEncoder()


class VaeMean(torch.nn.Module):
    """A diffusers AutoencoderKL as an encoder: `latent_dist.mean` times its scaling factor."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor


def tiny_vae() -> torch.nn.Module:
    """A diffusers AutoencoderKL with a tiny config and seeded random weights (no download)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.18215,
    )
    return VaeMean(vae)


def wrong_shape() -> torch.nn.Module:
    """An encoder that flattens: not (B, C, h, w)."""
    return torch.nn.Flatten()


def random_each_call() -> torch.nn.Module:
    """Unseeded: other weights in every process."""
    return torch.nn.Conv2d(3, 2, 2, 2)


def with_batchnorm() -> torch.nn.Module:
    """A convolution and a BatchNorm, whose `num_batches_tracked` is a 0-d buffer."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 4, 4), torch.nn.BatchNorm2d(2))


def not_a_module() -> object:
    """A factory that returns something else."""
    return "an encoder"

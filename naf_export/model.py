"""NAF, faithful to the release (`valeoai/NAF`, checkpoint ``naf_release.pth``).

Module names mirror the release so its state dict loads unchanged: ``image_encoder.encoder.*``,
``image_encoder.sem_encoder.*`` and the buffer ``image_encoder.rope.periods``. The attention step
uses :func:`naf_export.attention.cross_scale_neighborhood_attention`, which reads keys and values
at low resolution instead of upsampling them for NATTEN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import cross_scale_neighborhood_attention

__all__ = ["NAF", "ImageEncoder", "RotaryEmbedding2d"]


class EncoderBlock(nn.Module):
    """GroupNorm -> SiLU -> Conv -> GroupNorm -> SiLU -> Conv, no residual (release ``EncBlock``)."""

    def __init__(self, channels: int, kernel_size: int, num_groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.conv1 = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, padding_mode="reflect"
        )
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.conv2 = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, padding_mode="reflect"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.silu(self.norm1(x)))
        return self.conv2(F.silu(self.norm2(x)))


def _encoder_branch(in_channels: int, channels: int, kernel_size: int, num_blocks: int) -> nn.Sequential:
    stem = nn.Conv2d(
        in_channels, channels, kernel_size, padding=kernel_size // 2, padding_mode="reflect"
    )
    return nn.Sequential(stem, *[EncoderBlock(channels, kernel_size) for _ in range(num_blocks)])


class RotaryEmbedding2d(nn.Module):
    """Axial rotary position embedding (DINOv3 style) applied to a (B, D, H, W) map.

    Per head of ``D / num_heads`` channels, the first half of the channels is rotated against the
    second half; rotation angles cycle through ``head_dim / 4`` periods of the row coordinate,
    then of the column coordinate. Coordinates are pixel centres scaled to [-1, 1] per axis.
    Inference only: the release's training-time coordinate jitter is not reproduced.
    """

    def __init__(self, embed_dim: int, num_heads: int, base: float = 100.0) -> None:
        super().__init__()
        if embed_dim % (4 * num_heads):
            raise ValueError(
                f"embed_dim: expected a multiple of 4 * num_heads = {4 * num_heads}, got {embed_dim}"
            )
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.base = base
        quarter = self.head_dim // 4
        periods = base ** (2 * torch.arange(quarter, dtype=torch.float32) / (self.head_dim // 2))
        self.register_buffer("periods", periods, persistent=True)

    def _angles(self, size: int) -> torch.Tensor:
        # Same float32 operations, in the same order, as the release: bitwise-equal angles.
        coords = torch.arange(0.5, size, dtype=torch.float32, device=self.periods.device) / size
        coords = 2.0 * coords - 1.0
        return 2 * math.pi * coords[:, None] / self.periods[None, :]  # (size, head_dim / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        if d != self.num_heads * self.head_dim:
            raise ValueError(f"x: expected {self.num_heads * self.head_dim} channels, got {d}")
        # Half a head's channels: row frequencies then column frequencies, shared by both halves.
        row = self._angles(h).t()[:, :, None]  # (D/4, H, 1)
        col = self._angles(w).t()[:, None, :]  # (D/4, 1, W)
        cos = torch.cat([row.cos().expand(-1, h, w), col.cos().expand(-1, h, w)])  # (D/2, H, W)
        sin = torch.cat([row.sin().expand(-1, h, w), col.sin().expand(-1, h, w)])
        half = self.head_dim // 2
        x = x.view(b, self.num_heads, 2, half, h, w)
        first, second = x[:, :, 0], x[:, :, 1]
        out = torch.empty_like(x)
        out[:, :, 0] = first * cos - second * sin
        out[:, :, 1] = second * cos + first * sin
        return out.view(b, d, h, w)


class ImageEncoder(nn.Module):
    """Two convolution branches (1x1 and 3x3), pooled to the output size, then RoPE."""

    def __init__(
        self,
        dim: int = 256,
        rope_heads: int = 4,
        rope_base: float = 100.0,
        num_blocks: int = 2,
    ) -> None:
        super().__init__()
        self.encoder = _encoder_branch(3, dim // 2, 1, num_blocks)
        self.sem_encoder = _encoder_branch(3, dim // 2, 3, num_blocks)
        self.rope = RotaryEmbedding2d(dim, rope_heads, rope_base)

    def encode(self, image: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        """Both branches, concatenated and pooled to ``output_size``: the queries before RoPE."""
        out_h, out_w = output_size
        in_h, in_w = image.shape[-2:]
        if in_h > 4 * out_h or in_w > 4 * out_w:
            # The release's exact expression (each axis capped by 4x both output sides).
            size = (min(in_h, 4 * out_h, 4 * out_w), min(in_w, 4 * out_w, 4 * out_h))
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        x = torch.cat([self.encoder(image), self.sem_encoder(image)], dim=1)
        return F.adaptive_avg_pool2d(x, (out_h, out_w))

    def forward(self, image: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        return self.rope(self.encode(image, output_size))


def _size_pair(name: str, value: object) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{name}: expected (height, width) as two positive ints, got {value!r}")
    return int(value[0]), int(value[1])


class NAF(nn.Module):
    """Neighborhood Attention Filtering: upsample any backbone's features guided by the image.

    ``model(image, features, output_size)`` with ``image`` (B, 3, Hi, Wi), ``features``
    (B, C, h, w) and ``output_size`` (H, W) returns (B, C, H, W). ``C`` must be divisible by
    ``num_heads``; ``h, w >= kernel_size``; ``H >= h`` and ``W >= w``. Non-finite inputs are not
    rejected: they propagate as in the release (a NaN anywhere in the image makes every output
    NaN through the GroupNorm statistics), so a poisoned frame stays visibly poisoned.
    Constructor defaults are those of the release checkpoint (662,528 parameters).
    """

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 4,
        rope_heads: int = 4,
        kernel_size: int = 9,
        rope_base: float = 100.0,
        num_blocks: int = 2,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim: expected a multiple of num_heads={num_heads}, got {dim}")
        self.dim = dim
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.scale = (dim // num_heads) ** -0.5
        self.image_encoder = ImageEncoder(dim, rope_heads, rope_base, num_blocks)

    def check_inputs(
        self, image: torch.Tensor, features: torch.Tensor, output_size: object
    ) -> tuple[int, int]:
        """Validate the forward arguments; return ``output_size`` as ``(H, W)``."""
        for name, t in (("image", image), ("features", features)):
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 4:
                raise ValueError(
                    f"{name}: expected a 4-D tensor (B, C, H, W), got shape {tuple(t.shape)}"
                )
            if not t.is_floating_point():
                raise ValueError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        if image.shape[1] != 3:
            raise ValueError(f"image: expected 3 channels (RGB), got shape {tuple(image.shape)}")
        if min(image.shape[2:]) < 2:  # the 3x3 convolutions pad by reflection, which needs 2 pixels
            raise ValueError(f"image: expected at least 2x2 pixels, got shape {tuple(image.shape)}")
        if image.shape[0] != features.shape[0]:
            raise ValueError(
                f"features: batch size {features.shape[0]} does not match image batch size "
                f"{image.shape[0]}"
            )
        out_h, out_w = _size_pair("output_size", output_size)
        channels, in_h, in_w = features.shape[1:]
        if channels % self.num_heads:
            raise ValueError(
                f"features: channel count {channels} is not divisible by num_heads={self.num_heads}"
            )
        k = self.kernel_size
        if in_h < k or in_w < k:
            raise ValueError(
                f"features: spatial size must be at least {k}x{k} (the attention kernel), "
                f"got {in_h}x{in_w}"
            )
        if out_h < in_h or out_w < in_w:
            raise ValueError(
                f"output_size: expected at least the feature size {in_h}x{in_w}, got {out_h}x{out_w}"
            )
        return out_h, out_w

    def forward(
        self, image: torch.Tensor, features: torch.Tensor, output_size: tuple[int, int]
    ) -> torch.Tensor:
        output_size = self.check_inputs(image, features, output_size)
        if image.shape[0] == 0:  # an empty batch gives an empty result, as torch modules do
            dtype = self.image_encoder.rope.periods.dtype
            return features.new_empty((0, features.shape[1], *output_size), dtype=dtype)
        return self.stages(image, features, output_size)["output"]

    #: The intermediate results :meth:`stages` returns, in order (``naf-export validate --stages``).
    STAGES = ("encoder", "queries", "keys", "output")

    def stages(
        self, image: torch.Tensor, features: torch.Tensor, output_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """The forward pass with its intermediate results: ``encoder`` (the image encoder's pooled
        features, before RoPE), ``queries`` (after RoPE), ``keys`` (queries pooled to the feature
        size) and ``output``. Inputs as :meth:`forward` (checked by it; a non-empty batch here)."""
        encoder = self.image_encoder.encode(image.to(self.image_encoder.rope.periods.dtype), output_size)
        queries = self.image_encoder.rope(encoder)
        keys = F.adaptive_avg_pool2d(queries, features.shape[-2:])
        # The release casts values to the queries' dtype before attending.
        output = cross_scale_neighborhood_attention(
            queries, keys, features.to(queries.dtype), self.num_heads, self.kernel_size, self.scale
        )
        return {"encoder": encoder, "queries": queries, "keys": keys, "output": output}

"""FLOP counts of NAF's forward (multiply-add = 2 FLOP), for floors in benchmark tables."""

from __future__ import annotations


def encoder_input_size(image: tuple[int, int], output: tuple[int, int]) -> tuple[int, int]:
    """The image size the encoder runs at (the release's resize rule)."""
    (ih, iw), (oh, ow) = image, output
    if ih > 4 * oh or iw > 4 * ow:
        return min(ih, 4 * oh, 4 * ow), min(iw, 4 * ow, 4 * oh)
    return ih, iw


def attention_flops(output: tuple[int, int], channels: int, dim: int = 256, heads: int = 4, kernel: int = 9) -> float:
    """Logits (q.k) and weighted sum (p.v) over every output pixel's K x K window."""
    return 2.0 * output[0] * output[1] * kernel * kernel * (dim + channels)


def encoder_flops(image: tuple[int, int], output: tuple[int, int], width: int = 128, blocks: int = 2) -> float:
    h, w = encoder_input_size(image, output)
    per_pixel = 0.0
    for k in (1, 3):  # the 1x1 and the 3x3 branch: stem + 2 convs per block
        per_pixel += 2.0 * 3 * width * k * k + blocks * 2 * (2.0 * width * width * k * k)
    return per_pixel * h * w


def naf_flops(image: tuple[int, int], output: tuple[int, int], channels: int) -> float:
    return encoder_flops(image, output) + attention_flops(output, channels)


def measure_matmul_gflops(n: int = 4096, repeats: int = 3) -> float:
    """The machine's float32 matrix-product rate (torch.matmul, all threads), GFLOP/s."""
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9

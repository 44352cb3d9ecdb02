"""Cross-scale neighborhood attention in PyTorch (DESIGN.md section 2).

The release computes this step by nearest-exact upsampling ``key`` and ``value`` to the output
size and running NATTEN's dilated neighborhood attention. Here the same numbers come straight
from the low-resolution tensors: every output row ``i`` attends to the ``K`` low-resolution rows
``row_index[i]`` and every output column ``j`` to the ``K`` columns ``col_index[j]``.

Memory stays bounded: output rows are processed in chunks, and within a chunk all ``W`` pixels of
a row share its ``K`` key rows, so the logits are one batched matrix product against the full
key rows (``K * w`` keys) followed by a gather of each column's ``K`` window entries. Memory
therefore grows with the output size, never with output size x window.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = [
    "attend",
    "check_attention_inputs",
    "cross_scale_neighborhood_attention",
    "nearest_exact_source",
    "neighborhood_index",
]

#: Upper bound on the elements of one chunk's logits tensor (float32: 32 MiB).
_CHUNK_ELEMENTS = 8 * 1024 * 1024


@functools.lru_cache(maxsize=256)
def _nearest_exact_source_cached(in_size: int, out_size: int) -> torch.Tensor:
    # Ask PyTorch itself: interpolate the row numbers. A closed form in Python floats disagrees
    # with PyTorch's float arithmetic for hundreds of (in, out) pairs. The 2-D call matches the
    # kernel the release runs on (B, C, h, w) maps; row numbers are exact in float32 (< 2**24).
    rows = torch.arange(in_size, dtype=torch.float32).view(1, 1, in_size, 1)
    src = F.interpolate(rows, size=(out_size, 1), mode="nearest-exact")
    return src.view(out_size).to(torch.long)


def nearest_exact_source(in_size: int, out_size: int) -> torch.Tensor:
    """Input index that ``interpolate(mode="nearest-exact")`` reads for each output index.

    Returns a ``LongTensor`` of shape ``(out_size,)`` with values in ``[0, in_size)``.
    """
    if not (isinstance(in_size, int) and in_size >= 1):
        raise ValueError(f"in_size: expected a positive int, got {in_size!r}")
    if not (isinstance(out_size, int) and out_size >= 1):
        raise ValueError(f"out_size: expected a positive int, got {out_size!r}")
    return _nearest_exact_source_cached(in_size, out_size).clone()


def neighborhood_index(in_size: int, out_size: int, kernel_size: int = 9) -> torch.Tensor:
    """Low-resolution indices attended by each output index along one axis.

    Reproduces NATTEN's dilated neighborhood (dilation ``out_size // in_size``) on the
    nearest-exact upsampled axis, mapped back to low-resolution indices.

    Returns a ``LongTensor`` of shape ``(out_size, kernel_size)`` with values in ``[0, in_size)``.
    """
    if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1):
        raise ValueError(f"kernel_size: expected a positive odd int, got {kernel_size!r}")
    if not (isinstance(in_size, int) and in_size >= kernel_size):
        raise ValueError(
            f"in_size: expected an int >= kernel_size={kernel_size}, got {in_size!r}"
        )
    if not (isinstance(out_size, int) and out_size >= in_size):
        raise ValueError(f"out_size: expected an int >= in_size={in_size}, got {out_size!r}")
    src = _nearest_exact_source_cached(in_size, out_size)
    dilation = out_size // in_size
    i = torch.arange(out_size)
    group = i % dilation
    group_length = (out_size - group + dilation - 1) // dilation  # ceil((H - g) / d)
    start = torch.minimum(
        torch.clamp(i // dilation - kernel_size // 2, min=0), group_length - kernel_size
    )
    offsets = torch.arange(kernel_size)
    upsampled_pos = group[:, None] + dilation * (start[:, None] + offsets[None, :])
    return src[upsampled_pos]


def _shape_str(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_attention_inputs(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    num_heads: int,
    kernel_size: int,
) -> None:
    """Raise ``ValueError`` naming the argument when the inputs break the operator contract."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D tensor (B, C, H, W), got shape {_shape_str(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if not (isinstance(num_heads, int) and num_heads >= 1):
        raise ValueError(f"num_heads: expected a positive int, got {num_heads!r}")
    if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1):
        raise ValueError(f"kernel_size: expected a positive odd int, got {kernel_size!r}")
    b, dq, out_h, out_w = query.shape
    if key.shape[0] != b or value.shape[0] != b:
        raise ValueError(
            f"key/value: batch size must match query's {b}, got key {_shape_str(key)} "
            f"and value {_shape_str(value)}"
        )
    if key.shape[1] != dq:
        raise ValueError(f"key: expected {dq} channels like query, got shape {_shape_str(key)}")
    if key.shape[2:] != value.shape[2:]:
        raise ValueError(
            f"value: spatial size must equal key's {tuple(key.shape[2:])}, got {_shape_str(value)}"
        )
    if dq % num_heads:
        raise ValueError(f"query: channel count {dq} is not divisible by num_heads={num_heads}")
    if value.shape[1] % num_heads:
        raise ValueError(
            f"value: channel count {value.shape[1]} is not divisible by num_heads={num_heads}"
        )
    in_h, in_w = key.shape[2:]
    if in_h < kernel_size or in_w < kernel_size:
        raise ValueError(
            f"key: low-resolution size must be at least kernel_size={kernel_size} on both axes, "
            f"got {in_h}x{in_w}"
        )
    if out_h < in_h or out_w < in_w:
        raise ValueError(
            f"query: output size must be at least the low-resolution size {in_h}x{in_w}, "
            f"got {out_h}x{out_w}"
        )


@functools.lru_cache(maxsize=64)
def _neighborhood_index_on(in_size: int, out_size: int, kernel_size: int, device: torch.device) -> torch.Tensor:
    # Built and copied to the device once per shape: no host work (and no host-to-device copy,
    # which CUDA-graph capture forbids) on later calls. Read-only by everything that uses it; a
    # normal tensor even when first asked for under inference_mode (autograd may save it later).
    with torch.inference_mode(False):
        return neighborhood_index(in_size, out_size, kernel_size).to(device)


def _index_table(name: str, table: torch.Tensor | None, out_size: int, in_size: int, kernel_size: int,
                 device: torch.device) -> torch.Tensor:
    """``table`` checked against the contract ((out_size, K) integers in [0, in_size)), or NAF's."""
    if table is None:
        return _neighborhood_index_on(in_size, out_size, kernel_size, torch.device(device))
    if not isinstance(table, torch.Tensor) or table.is_floating_point() or table.is_complex():
        raise ValueError(f"{name}: expected an integer torch.Tensor, got {type(table).__name__}")
    if tuple(table.shape) != (out_size, kernel_size):
        raise ValueError(f"{name}: expected shape ({out_size}, {kernel_size}), got {_shape_str(table)}")
    if table.numel() and (int(table.min()) < 0 or int(table.max()) >= in_size):
        raise ValueError(f"{name}: entries must lie in [0, {in_size}), got [{int(table.min())}, {int(table.max())}]")
    return table.to(device=device, dtype=torch.long)


def cross_scale_neighborhood_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    num_heads: int,
    kernel_size: int = 9,
    scale: float | None = None,
    *,
    row_index: torch.Tensor | None = None,
    col_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attend from every high-resolution query pixel to its window of low-resolution keys.

    Args:
        query: ``(B, Dq, H, W)``, the per-pixel queries.
        key: ``(B, Dq, h, w)``, low-resolution keys; ``h, w >= kernel_size``, ``H >= h``, ``W >= w``.
        value: ``(B, C, h, w)``; ``C`` and ``Dq`` divisible by ``num_heads``.
        num_heads: number of attention heads.
        kernel_size: window size ``K`` (odd).
        scale: logit scale, default ``(Dq / num_heads) ** -0.5``.
        row_index, col_index: the windows as the operator's index tables, ``(H, K)`` and ``(W, K)``
            integers in ``[0, h)`` / ``[0, w)``; by default NAF's (:func:`neighborhood_index`). Given
            explicitly, any tables (the operator contract's inputs 3 and 4) are honoured.

    Returns:
        ``(B, C, H, W)`` in ``value``'s dtype, computed in float32.

    CUDA tensors go through the project's CUDA kernel as one operator
    (:mod:`naf_export.cuda_attention`; ``NAF_EXPORT_CUDA_ATTENTION=reference`` keeps them here).
    """
    check_attention_inputs(query, key, value, num_heads, kernel_size)
    out_h, out_w = query.shape[2:]
    in_h, in_w = value.shape[2:]
    if scale is None:
        scale = (query.shape[1] // num_heads) ** -0.5
    row_index = _index_table("row_index", row_index, out_h, in_h, kernel_size, query.device)
    col_index = _index_table("col_index", col_index, out_w, in_w, kernel_size, query.device)
    if query.is_cuda:
        from . import cuda_attention

        if cuda_attention.use_cuda_kernel():
            return cuda_attention.cross_scale_attention(query, key, value, row_index, col_index, num_heads, float(scale))
    return attend(query, key, value, row_index, col_index, num_heads, scale)


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    row_index: torch.Tensor,
    col_index: torch.Tensor,
    num_heads: int,
    scale: float,
) -> torch.Tensor:
    """The computation of :func:`cross_scale_neighborhood_attention` in PyTorch, on inputs that
    already passed its checks (``row_index``/``col_index`` long tensors on the inputs' device)."""
    if torch.is_autocast_enabled(query.device.type):
        # float32 as documented: under autocast the products would come back in float16 while
        # softmax stays float32 (and scatter_add_ refuses the mix).
        with torch.autocast(query.device.type, enabled=False):
            return attend(query, key, value, row_index, col_index, num_heads, scale)
    b, dq_all, out_h, out_w = query.shape
    c_all, in_h, in_w = value.shape[1:]
    heads, k = num_heads, row_index.shape[1]
    dq, e = dq_all // heads, c_all // heads

    # Heads first, channels last; float32 whatever the storage type.
    q = query.float().view(b, heads, dq, out_h, out_w).permute(0, 1, 3, 4, 2)  # B n H W dq
    kk = key.float().view(b, heads, dq, in_h, in_w)
    vv = value.float().view(b, heads, e, in_h, in_w).permute(0, 1, 3, 4, 2)  # B n h w e
    out = torch.empty(b, heads, out_h, out_w, e, dtype=torch.float32, device=query.device)
    # Gather index for the column windows: (W, K, K) -> broadcast over (B, n, rows, W, K, K).
    col_gather = col_index.view(1, 1, 1, out_w, 1, k).expand(1, 1, 1, out_w, k, k)

    # A NaN/inf value must reach exactly the outputs whose window holds it (DESIGN.md section 2),
    # but the dense product below multiplies the zero weights of keys outside a pixel's window by
    # whole key rows of values (0 * inf = NaN). Such values take the exact path: each pixel's own
    # K x K window of values. (One check of the small low-resolution map; a sync on GPU.)
    exact_windows = not bool(torch.isfinite(vv).all())
    row_elements = b * heads * out_w * k * (k * e if exact_windows else in_w)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, row_elements))
    for r0 in range(0, out_h, rows_per_chunk):
        r1 = min(out_h, r0 + rows_per_chunk)
        n = r1 - r0
        rows = row_index[r0:r1]  # n K
        # Full key rows of each output row's window: B n rows dq (K w).
        key_rows = kk[:, :, :, rows, :].permute(0, 1, 3, 2, 4, 5).reshape(b, heads, n, dq, k * in_w)
        logits_rows = torch.matmul(q[:, :, r0:r1], key_rows).view(b, heads, n, out_w, k, in_w)
        logits = torch.gather(logits_rows, 5, col_gather.expand(b, heads, n, out_w, k, k))
        probs = torch.softmax(logits.reshape(b, heads, n, out_w, k * k) * scale, dim=-1)
        if exact_windows:
            windows = vv[:, :, rows][:, :, :, :, col_index]  # B n rows K(row taps) W K(col taps) e
            out[:, :, r0:r1] = torch.einsum("bnrwac,bnrawce->bnrwe", probs.view(b, heads, n, out_w, k, k), windows)
            continue
        # Scatter the window weights back onto the full key rows (duplicate columns add up),
        # then one batched product with the value rows.
        dense = torch.zeros_like(logits_rows)
        dense.scatter_add_(5, col_gather.expand(b, heads, n, out_w, k, k), probs.view_as(logits))
        value_rows = vv[:, :, rows].reshape(b, heads, n, k * in_w, e)
        out[:, :, r0:r1] = torch.matmul(dense.view(b, heads, n, out_w, k * in_w), value_rows)

    return out.permute(0, 1, 4, 2, 3).reshape(b, c_all, out_h, out_w).to(value.dtype)

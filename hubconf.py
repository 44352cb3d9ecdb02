"""torch.hub entry point: a drop-in for the release's ``torch.hub.load("valeoai/NAF", "naf")``
that needs no NATTEN and runs on CPU, CUDA or MPS.

    model = torch.hub.load("<this repository or a local clone>", "naf", source="github" | "local")
    upsampled = model(image, features, (H, W))

Same signature as the release's entry point; the model comes back in eval mode (NAF has no
training-only layers, and the release's training-time RoPE jitter is not reproduced).
"""

dependencies = ["torch", "numpy", "tqdm"]


def naf(pretrained: bool = True, device="cpu"):
    """NAF (Neighborhood Attention Filtering), the release architecture.

    Args:
        pretrained: load the release weights (``naf_release.pth``, downloaded once into torch
            hub's checkpoint cache, the same file the release's entry point downloads); otherwise
            naf-export's seeded stand-in weights.
        device: where the model is put ('cpu', 'cuda', 'mps', a torch.device).
    """
    from naf_export.checkpoint import RELEASE, load_naf

    return load_naf(RELEASE if pretrained else None).to(device)

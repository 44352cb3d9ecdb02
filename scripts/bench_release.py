#!/usr/bin/env python3
"""The release code against this project's PyTorch model and ONNX Runtime artifact, side by side
on one machine: latency, peak memory and output agreement at the official protocol.

    pip install einops        # the release code needs it; NATTEN is installed by scripts/setup.sh
    git clone https://github.com/valeoai/NAF /path/to/NAF
    python scripts/bench_release.py --release-repo /path/to/NAF [--ratios 2 4] [--repeats 3]

Nothing of the release is shipped here: it is imported from your clone. On a CPU, NATTEN's only
backend is ``flex-fna`` (the release asks for ``cutlass-fna``, a CUDA kernel), and flex needs equal
head dims for queries and values, so the release's ``na2d`` call is pointed at flex-fna with the
values split into chunks of the query head dim (attention is linear in the values): the release's
computation, NATTEN's CPU kernel. All three run the same weights (naf-export's seeded stand-in, or
``--checkpoint``) on the same inputs, each in a fresh process (peak RSS = that process's VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("release", "pytorch", "onnxruntime")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def _release_model(release_repo: Path, state: dict):
    """The release's NAF from ``release_repo``, its na2d call on NATTEN's CPU backend."""
    import importlib.util

    import natten
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(release_repo))
    import src.layers.attentions as attentions  # noqa: E402 - from the user's clone

    def na2d_cpu(q, k, v, kernel_size, dilation, **_):
        dq = q.shape[-1]
        chunks = []
        for c0 in range(0, v.shape[-1], dq):
            part = v[..., c0:c0 + dq]
            pad = dq - part.shape[-1]
            out = natten.na2d(q, k, F.pad(part, (0, pad)).contiguous(), kernel_size=kernel_size, dilation=dilation,
                              backend="flex-fna")
            chunks.append(out[..., :dq - pad])
        return torch.cat(chunks, dim=-1)

    attentions.NATTEN_RECENT, attentions.na2d = True, na2d_cpu
    spec = importlib.util.spec_from_file_location("release_naf", release_repo / "src" / "model" / "naf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.NAF()
    model.load_state_dict(state, strict=True)
    return model.eval()


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    data = np.load(args.inputs)
    image, features = data["image"], data["features"]
    out_size = (args.features * args.ratio,) * 2
    if args.backend == "onnxruntime":
        from naf_export.runners.onnxruntime import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(args.model, threads=args.threads)

        def run():
            return runner(image, features)
    else:
        from naf_export.checkpoint import load_naf

        model = load_naf(args.checkpoint)
        if args.backend == "release":
            model = _release_model(Path(args.release_repo), model.state_dict())
        image_t, features_t = torch.from_numpy(image), torch.from_numpy(features)

        def run():
            with torch.inference_mode():
                return model(image_t, features_t, out_size).numpy()

    output = run()  # warm-up, and the output compared by the parent
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    np.save(args.output, output)
    print(json.dumps({"median_ms": statistics.median(times), "peak_rss_mb": _peak_rss_mb()}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release-repo", type=Path, required=True, help="a local clone of github.com/valeoai/NAF")
    p.add_argument("--ratios", type=int, nargs="+", default=[2, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--image", type=int, default=448)
    p.add_argument("--features", type=int, default=28)
    p.add_argument("--channels", type=int, default=384)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", type=Path, default=None)
    # Worker mode (one measurement in a fresh process).
    p.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--ratio", type=int, help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.backend:
        worker(args)
        return 0
    if not (args.release_repo / "src" / "model" / "naf.py").is_file():
        p.error(f"--release-repo: {args.release_repo} is not a clone of valeoai/NAF (no src/model/naf.py)")

    import numpy as np

    from naf_export.bench.flops import measure_matmul_gflops
    from naf_export.checkpoint import load_naf
    from naf_export.metrics import parity
    from naf_export.onnx_export import export_onnx
    from naf_export.samples import sample_batch

    rate = measure_matmul_gflops()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image, features = sample_batch((args.image,) * 2, (args.features,) * 2, args.channels)
        inputs = work / "inputs.npz"
        np.savez(inputs, image=image.numpy(), features=features.numpy())
        for ratio in args.ratios:
            out = (args.features * ratio,) * 2
            model_path = export_onnx(load_naf(args.checkpoint), work / f"naf_r{ratio}.onnx", image_size=(args.image,) * 2,
                                     feature_size=(args.features,) * 2, channels=args.channels, output_size=out,
                                     attention="fused", encoder_ops="fused")
            outputs = {}
            for backend in BACKENDS:
                cmd = [sys.executable, __file__, "--release-repo", str(args.release_repo), "--backend", backend,
                       "--ratio", str(ratio), "--inputs", str(inputs), "--model", str(model_path),
                       "--output", str(work / f"{backend}_r{ratio}.npy"), "--repeats", str(args.repeats),
                       "--threads", str(args.threads), "--features", str(args.features)]
                if args.checkpoint:
                    cmd += ["--checkpoint", args.checkpoint]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if proc.returncode != 0:
                    print(f"{backend} ratio {ratio} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                    rows.append({"backend": backend, "ratio": ratio, "error": proc.stderr[-3000:]})
                    continue
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                outputs[backend] = np.load(work / f"{backend}_r{ratio}.npy")
                rows.append({"backend": backend, "ratio": ratio, "output": out[0], **result})
                print(f"{backend:12s} ratio {ratio}: {result['median_ms']:.0f} ms, {result['peak_rss_mb']:.0f} MB",
                      flush=True)
            if "release" in outputs:
                for row in rows:
                    if row["ratio"] == ratio and row["backend"] in outputs and row["backend"] != "release":
                        row["rel_l2_vs_release"] = parity(outputs[row["backend"]], outputs["release"])["rel_l2"]

    print(f"\nmatmul {rate:.0f} GFLOP/s, {args.threads} threads, image {args.image}², features {args.features}², "
          f"C = {args.channels}, {time.strftime('%Y-%m-%d')}")
    print("| implementation | ratio | output | median ms | peak RSS MB | rel_l2 vs release | speed vs release | memory vs release |")
    print("|---|---|---|---|---|---|---|---|")
    release = {r["ratio"]: r for r in rows if r["backend"] == "release" and "error" not in r}
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | {r['ratio']} | | failed | | | | |")
            continue
        base = release.get(r["ratio"])
        speed = f"{base['median_ms'] / r['median_ms']:.1f}×" if base else ""
        memory = f"{base['peak_rss_mb'] / r['peak_rss_mb']:.1f}× less" if base else ""
        rel = f"{r['rel_l2_vs_release']:.1e}" if "rel_l2_vs_release" in r else ""
        print(f"| {r['backend']} | {r['ratio']} | {r['output']}² | {r['median_ms']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{rel} | {speed} | {memory} |")
    if args.json:
        args.json.write_text(json.dumps({"matmul_gflops": rate, "rows": rows}, indent=2) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

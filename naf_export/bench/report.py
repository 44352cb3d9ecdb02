"""Benchmark results as Markdown tables and a latency plot."""

from __future__ import annotations

from pathlib import Path

__all__ = ["full_table", "plot", "require_matplotlib", "summary_table"]


def full_table(results: list[dict]) -> str:
    """One row per (backend, ratio): latency, peak RSS, FLOPs, floor and the ratio to it."""
    lines = ["| backend | ratio | output | median ms | peak RSS MB | GFLOP | floor ms | × floor |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['ratio']} | | failed | | | | |")
            continue
        lines.append(f"| {r['backend']} | {r['ratio']} | {r['output']} | {r['median_ms']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['gflop']:.1f} | {r['floor_ms']:.0f} | "
                     f"{r['median_ms'] / r['floor_ms']:.2f} |")
    return "\n".join(lines)


def summary_table(results: list[dict]) -> str:
    """One row per backend: latency at every ratio, then peak RSS and × floor at the largest
    ratio (the README's "speed at a glance" table)."""
    ratios = sorted({r["ratio"] for r in results})
    backends = list(dict.fromkeys(r["backend"] for r in results))
    by_key = {(r["backend"], r["ratio"]): r for r in results}
    top = ratios[-1]
    header = ["backend", *(f"ratio {q} ms" for q in ratios), f"ratio {top} peak RSS MB", f"ratio {top} × floor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for backend in backends:
        cells = [backend]
        for q in ratios:
            r = by_key.get((backend, q))
            cells.append("failed" if r is None or "error" in r else f"{r['median_ms']:.0f}")
        r = by_key.get((backend, top))
        ok = r is not None and "error" not in r
        cells += [f"{r['peak_rss_mb']:.0f}" if ok else "", f"{r['median_ms'] / r['floor_ms']:.2f}" if ok else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def require_matplotlib():
    """``matplotlib.pyplot`` on a file-only backend; TargetUnavailable (exit 3) saying how to
    install it when it is missing."""
    try:
        import matplotlib
    except ImportError as exc:
        from ..errors import TargetUnavailable

        raise TargetUnavailable("plot: matplotlib is not installed; pip install 'naf-export[bench]' "
                                "(or pip install matplotlib)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(results: list[dict], path: Path, title: str = "") -> Path:
    """Median latency against upsampling ratio, one line per backend, both axes logarithmic, with
    the FLOP floor of the whole model (and of the attention op alone, when such backends ran)
    dashed; saved as a PNG at ``path``."""
    plt = require_matplotlib()
    from matplotlib.ticker import FuncFormatter

    good = [r for r in results if "error" not in r]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for backend in dict.fromkeys(r["backend"] for r in good):
        rows = sorted((r for r in good if r["backend"] == backend), key=lambda r: r["ratio"])
        ax.plot([r["ratio"] for r in rows], [r["median_ms"] for r in rows], marker="o", label=backend)
    for attention, label in ((False, "FLOP floor (whole model)"), (True, "FLOP floor (attention op)")):
        floors = {r["ratio"]: r["floor_ms"] for r in good if r["backend"].endswith("-attention") == attention}
        if floors:
            ratios = sorted(floors)
            ax.plot(ratios, [floors[q] for q in ratios], linestyle="--", color="black" if not attention else "gray",
                    label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 200, not 2 x 10^2
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ratios = sorted({r["ratio"] for r in good})
    ax.set_xticks(ratios, [str(q) for q in ratios])
    ax.set_xlabel("upsampling ratio (output = features × ratio)")
    ax.set_ylabel("median latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

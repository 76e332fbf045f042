"""Markdown tables and plots of ``benchmarks.bench`` results."""

from __future__ import annotations

from pathlib import Path


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def to_markdown(results: dict) -> str:
    peak = results["gemm_peak"]
    m = results["machine"]
    lines = [
        f"# Benchmarks ({m['cpu']}, {m['cores']} cores, flags {', '.join(m['flags']) or 'none'}, "
        f"{results['threads']} threads)",
        "",
        f"fp32 GEMM peak: **{_fmt(peak['gflops'])} GFLOP/s** (before {_fmt(peak['before']['gflops'])}, "
        f"after {_fmt(peak['after']['gflops'])}); every % below is of the higher.",
        "",
        "## Encoders",
        "",
        "| encoder | shape | variant | runtime | B | GFLOP/user | ms/call | users/s | % of peak | max abs emb diff | "
        "codes equal |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["encoders"]:
        variant = ", ".join(f"{k}={r[k]}" for k in ("pyramid", "attention") if k in r) or "-"
        lines.append(
            f"| {r['encoder']} | {r['shape']} | {variant} | {r['runtime']} | {r['batch']} | "
            f"{r['flops_per_user'] / 1e9:.4f} | {_fmt(r['ms_per_call'], 2)} | {_fmt(r['users_per_s'])} | "
            f"{_fmt(r['pct_peak'])} | {r['max_abs_embedding']:.2e} | {100 * r['codes_equal']:.0f} % |"
        )
    lines += ["", "## SIDE codec (4 x 256, d = 256)", "", "| op | runtime | rows/s |", "| --- | --- | ---: |"]
    lines += [f"| {r['op']} | {r['runtime']} | {_fmt(r['rows_per_s'], 0)} |" for r in results["side"]]
    return "\n".join(lines) + "\n"


def encoder_plot(rows: list[dict], path: Path) -> Path:
    """% of the GEMM peak against batch, one panel per encoder x shape (default variants), one line per runtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = [r for r in rows if "pyramid" not in r and "attention" not in r]
    panels = sorted({(r["encoder"], r["shape"]) for r in plain})
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (encoder, shape) in zip(axes[0], panels):
        for runtime in sorted({r["runtime"] for r in plain}):
            pts = sorted(
                (r["batch"], r["pct_peak"])
                for r in plain
                if (r["encoder"], r["shape"], r["runtime"]) == (encoder, shape, runtime)
            )
            ax.plot([b for b, _ in pts], [p for _, p in pts], marker="o", label=runtime)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{encoder} ({shape})")
        ax.set_xlabel("batch (users)")
        ax.set_ylabel("% of fp32 GEMM peak")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""The files of an ``understudy auto`` report: ``report.json`` (every number),
``report.md`` (the decision and its reasons, every table) and ``frontier.png`` (latency vs
FLOPs), written atomically into the output folder after each stage, so a partial run
leaves a report too.
"""

from __future__ import annotations

from pathlib import Path

from distill.auto.report import AutoReport
from distill.auto.report_md import markdown
from distill.auto.screen import frontier_metric
from distill.auto.store import write_json
from runtime.files import save_figure, write_atomic


def write_report(report: AutoReport, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and (when anything was measured) frontier.png."""
    out = Path(out_dir)
    paths = {"json": write_json(out / "report.json", report.to_dict())}
    if report.screen:
        paths["png"] = plot_frontier(report, out / "frontier.png")
    paths["md"] = write_atomic(out / "report.md", markdown(report))
    return paths


def plot_frontier(report: AutoReport, path: str | Path) -> Path:
    """Latency (the frontier metric) vs GFLOPs of every candidate: filled markers meet
    the budget, the line joins the frontier, dashed lines are the budget's limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = frontier_metric(report.budget)
    label = metric.replace("_ms", "")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    markers = "osD^v<>ph*"
    inputs = sorted({r.candidate.input for r in report.screen})
    for i, size in enumerate(inputs):
        rows = [r for r in report.screen if r.candidate.input == size]
        for meets in (True, False):
            sel = [r for r in rows if r.meets == meets]
            if sel:
                ax.scatter(
                    [r.flops / 1e9 for r in sel],
                    [getattr(r.latency, metric) for r in sel],
                    marker=markers[i % len(markers)],
                    facecolors="tab:green" if meets else "none",
                    edgecolors="tab:green" if meets else "tab:red",
                    label=f"{size}px {'meets' if meets else 'misses'} budget",
                )
    front = sorted((r for r in report.screen if r.on_frontier), key=lambda r: r.flops)
    ax.plot(
        [r.flops / 1e9 for r in front],
        [getattr(r.latency, metric) for r in front],
        color="0.4",
        lw=1,
        label="frontier",
    )
    for key, style in (("p50_ms", "--"), ("p99_ms", ":")):
        limit = getattr(report.budget.latency, key)
        if limit is not None:
            ax.axhline(limit, color="tab:blue", ls=style, lw=1, label=f"budget {key[:3]}")
    for r in report.screen:
        if r.candidate.name in report.chosen:
            xy = (r.flops / 1e9, getattr(r.latency, metric))
            ax.annotate(
                f"chosen: {r.candidate.name}",
                xy,
                textcoords="offset points",
                xytext=(-6, 8),
                ha="right",
                fontsize=8,
            )
    ax.set_xlabel("GFLOPs (2 x MACs, batch 1)")
    ax.set_ylabel(f"end-to-end {label} latency, ms (batch {report.budget.latency.batch})")
    ax.set_title(f"Latency screen on {report.backend}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)

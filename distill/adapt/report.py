"""The files of an ``understudy adapt`` run: ``report.json`` (every number),
``report.md`` (the verdict and its reasons, then the tables) and ``report.png`` (deployed
vs adapted, and the stop-frame score and original mAP per epoch), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.files import save_figure, write_atomic, write_json_atomic
from runtime.measure import markdown_table


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and report.png into ``out_dir``."""
    out = Path(out_dir)
    return {
        "json": write_json_atomic(out / "report.json", report),
        "md": write_atomic(out / "report.md", markdown(report)),
        "png": plot(report, out / "report.png"),
    }


def _score_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in ("deployed", "adapted"):
        s = report["scores"][name]
        row = {
            "student": name,
            "site_f1": s["site"]["f1"],
            "site_p": s["site"]["precision"],
            "site_r": s["site"]["recall"],
            "site_map": s["site"]["map50_95"],
            "orig_map": s["original"]["map50_95"],
            "orig_map50": s["original"]["map50"],
        }
        if "site_labelled" in s:
            row["lab_map"] = s["site_labelled"]["map50_95"]
        rows.append(row)
    return rows


def markdown(report: dict[str, Any]) -> str:
    """The Markdown form of a report."""
    gate = report["gate"]
    verdict = "replace the deployed student" if gate["replace"] else "keep the deployed student"
    frames = report["site_frames"]
    md = [
        "# Site adaptation",
        "",
        f"**Verdict: {verdict}** (`{report['student']['path']}` is the {report['student']['is']} "
        "student).",
        "",
        *[f"- {r}" for r in gate["reasons"]],
        "",
        f"Deployed `{report['deployed']}`, teacher `{report['teacher']}`, original data "
        f"`{report['data']}`; site sources: {', '.join(f'`{s}`' for s in report['sources'])}.",
        f"Site frames (by time, per stream; {frames['streams']} streams): {frames['train']} "
        f"train, {frames['stop']} stop (early stopping), {frames['test']} test (held out).",
        f"Wall time {report['wall_seconds']} s; best epoch {report['best_epoch']}"
        + (" (stopped early)." if report["stopped_early"] else "."),
        f"Teacher check: {report['teacher_check'].get('note', report['teacher_check'])}.",
        *([budget_text(report["budget"])] if report.get("budget") else []),
        "",
        "## Scores (points)",
        "",
        "Site: agreement with the teacher on the held-out test frames (P/R/F1 at the "
        "deployed operating point; mAP50-95 against the teacher's pseudo-labels). "
        "Original: COCO mAP on the original val split.",
        "",
    ]
    cols = [
        ("student", "student"),
        ("site_p", "site P"),
        ("site_r", "site R"),
        ("site_f1", "site F1"),
        ("site_map", "site mAP50-95 vs teacher"),
        ("orig_map", "original mAP50-95"),
        ("orig_map50", "original mAP50"),
    ]
    rows = _score_rows(report)
    if "lab_map" in rows[0]:
        cols.append(("lab_map", "labelled site mAP50-95"))
    md += [*markdown_table(rows, cols), "", "## Per class on the site test frames (F1)", ""]
    per = {n: report["scores"][n]["site"]["per_class"] for n in ("deployed", "adapted")}
    class_rows = [
        {"class": c, "deployed": per["deployed"][c]["f1"], "adapted": per["adapted"][c]["f1"]}
        for c in per["deployed"]
    ]
    md += markdown_table(
        class_rows, [("class", "class"), ("deployed", "deployed F1"), ("adapted", "adapted F1")]
    )
    md += ["", "## Epochs", ""]
    cols = [
        ("epoch", "epoch"),
        ("stop_f1", "stop F1"),
        ("stop_map50_95", "stop mAP50-95"),
        ("original_map50_95", "original mAP50-95"),
        ("seconds", "s"),
    ]
    md += markdown_table(report["history"], cols)
    return "\n".join(md) + "\n"


def budget_text(b: dict[str, Any]) -> str:
    """The time budget's plan, in a sentence (``understudy adapt --minutes``)."""
    c = b["costs"]
    return (
        f"Time budget {b['minutes']:g} min: {b['epochs']} epochs of {b['steps_per_epoch']} "
        f"steps ({c['seconds_per_step']} s each), {b['replay_fraction']:.1%} of the original "
        f"train split replayed; {b['planned_seconds']} s planned of the {c['left']} s left "
        "after the fixed work" + ("." if b["fits"] else " (did not fit: the minimum ran).")
    )


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Deployed vs adapted (bars) and the per-epoch curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _score_rows(report)
    keys = [
        ("site_f1", "site F1"),
        ("site_map", "site mAP\nvs teacher"),
        ("orig_map", "original\nmAP50-95"),
    ]
    if "lab_map" in rows[0]:
        keys.append(("lab_map", "labelled site\nmAP50-95"))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    width = 0.38
    for i, (row, color) in enumerate(zip(rows, ("0.55", "tab:green"))):
        xs = [k + (i - 0.5) * width for k in range(len(keys))]
        ax1.bar(xs, [row[k] for k, _ in keys], width, color=color, label=row["student"])
    ax1.set_xticks(range(len(keys)), [label for _, label in keys], fontsize=8)
    ax1.set_ylabel("points")
    ax1.set_title("deployed vs adapted", fontsize=10)
    ax1.legend(fontsize=8)
    hist = report["history"]
    epochs = [h["epoch"] for h in hist]
    for key, label in (
        ("stop_f1", "stop F1"),
        ("stop_map50_95", "stop mAP vs teacher"),
        ("original_map50_95", "original mAP50-95"),
    ):
        ys = [h.get(key) for h in hist]
        if any(y is not None for y in ys):
            ax2.plot(epochs, ys, marker="o", label=label)
    if report["best_epoch"]:
        ax2.axvline(report["best_epoch"], color="0.5", ls=":", lw=1, label="kept epoch")
    ax2.set_xlabel("adaptation epoch")
    ax2.set_title("per epoch", fontsize=10)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)

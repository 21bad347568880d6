"""The accuracy benchmark's results file (``benchmarks.accuracy``): row keys, and the
JSON, Markdown table and bar chart written after every finished run."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.accuracy_jobs import label

COLUMNS = [
    ("model", "model"),
    ("recipe", "recipe"),
    ("size", "size"),
    ("seed", "seed"),
    ("labelled_fraction", "labelled"),
    ("precision", "precision"),
    ("map50_95", "mAP50-95"),
    ("map50", "mAP50"),
    ("epochs", "epochs"),
    ("train_seconds", "train s"),
    ("images_per_s", "img/s"),
]


def key(row: dict) -> tuple:
    return (
        row["model"],
        row["size"],
        row["seed"],
        row["labelled_fraction"],
        row["precision"],
        row.get("recipe", ""),
    )


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def save_results(path: Path, rows: list[dict], command: str) -> None:
    from runtime.files import write_atomic, write_json_atomic
    from runtime.measure import machine, markdown_table, today

    rows = sorted(
        rows,
        key=lambda r: (
            r["labelled_fraction"] != 1.0,
            r["model"] != "teacher",
            r["model"],
            r.get("recipe", ""),
            r["precision"],
            r["seed"],
        ),
    )
    write_json_atomic(
        path, {"command": command, "machine": machine(), "date": today(), "rows": rows}
    )
    md = [
        f"# Accuracy on the standard synth benchmark ({today()})",
        "",
        f"Command: `{command}`",
        "",
        *markdown_table(rows, COLUMNS),
        "",
        *[
            f"- {label(r)} seed {r['seed']} ({r['labelled_fraction']:.0%} labels, "
            f"{r['precision']}): {r['note']}"
            for r in rows
            if r.get("note")
        ],
    ]
    write_atomic(path.with_suffix(".md"), "\n".join(md) + "\n")
    plot(rows, path.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[float]] = {}
    for r in rows:
        name = label(r) + ("" if r["labelled_fraction"] == 1.0 else " (20%)")
        name += " int8" if r["precision"] == "int8" else ""
        groups.setdefault(name, []).append(r["map50_95"])
    names = list(groups)
    means = [sum(v) / len(v) for v in groups.values()]
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.8), 3.8))
    ax.bar(names, means, color=["#555" if n == "teacher" else "#4a8" for n in names])
    for i, v in enumerate(groups.values()):
        ax.scatter([i] * len(v), v, color="k", s=10, zorder=3)
    ax.set_ylabel("mAP50-95 (points)")
    ax.set_title("nano students vs the large teacher (dots: seeds)")
    plt.xticks(rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

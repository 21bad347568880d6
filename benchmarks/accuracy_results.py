"""The accuracy benchmark's results file (``benchmarks.accuracy``): row keys, and the
JSON, Markdown table and bar chart written after every finished run.

``accuracy.json`` holds the rows, an optional ``title`` (for a file of another run than the
benchmark's, e.g. a reduced one) and, under ``notes``, what the rows alone do not say
(what was tried and why, how wall times were measured): a list of
``{"title": str, "text": str, "items": [str, ...]}`` (Markdown), kept as they are when a
run adds rows and rendered below the table. After editing the notes, rewrite the
Markdown from the JSON (which stays as it is):

    python -m benchmarks.accuracy_results [benchmarks/results/accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.accuracy_jobs import label
from runtime.files import save_figure, write_atomic, write_json_atomic
from runtime.measure import machine, markdown_table, today

RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.json"
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
    """Write ``rows`` (sorted) to ``path`` with this machine and date, keeping the notes
    already there, the rows there that ``rows`` lacks (another process's) and the fields
    added to a row there since it was read (e.g. a ``note``); rewrite the Markdown and the
    chart beside it."""
    kept = json.loads(path.read_text()) if path.is_file() else {}
    notes = kept.get("notes", [])
    there = {key(r): r for r in kept.get("rows", [])}
    # a redone row (it says what it ``replaced``) replaces the file's whole: a field of the
    # old run it lacks would contradict it
    ours = {key(r): r if "replaced" in r else {**there.get(key(r), {}), **r} for r in rows}
    rows = sorted(
        [*ours.values(), *(r for k, r in there.items() if k not in ours)],
        key=lambda r: (
            r["labelled_fraction"] != 1.0,
            r["model"] != "teacher",
            r["model"],
            r.get("recipe", ""),
            r["precision"],
            r["seed"],
        ),
    )
    doc = {"command": command, "machine": machine(), "date": today(), "rows": rows}
    if "title" in kept:  # a file of another run than the benchmark's says so in its title
        doc["title"] = kept["title"]
    write_json_atomic(path, {**doc, "notes": notes} if notes else doc)
    write_atomic(path.with_suffix(".md"), markdown({**doc, "notes": notes}))
    plot(rows, path.with_suffix(".png"))


def markdown(doc: dict) -> str:
    """The Markdown of an accuracy.json document: the table, each row's note, the notes."""
    rows = doc["rows"]
    md = [
        f"# {doc.get('title', 'Accuracy on the standard synth benchmark')} ({doc['date']})",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {doc['machine']}",
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
    for note in doc.get("notes", []):
        md += ["", f"## {note['title']}", ""]
        md += [note["text"], ""] if note.get("text") else []
        md += [f"- {item}" for item in note.get("items", [])]
    return "\n".join(md) + "\n"


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
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy_results",
        description="Rewrite the Markdown beside an accuracy.json from it (the JSON and the "
        "chart stay as they are).",
    )
    ap.add_argument("results", nargs="?", type=Path, default=RESULTS, help="accuracy.json")
    args = ap.parse_args(argv)
    if not args.results.is_file():
        ap.error(f"{args.results}: no such file")
    out = args.results.with_suffix(".md")
    write_atomic(out, markdown(json.loads(args.results.read_text())))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

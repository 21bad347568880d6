"""Distil a student at any grid point with the existing distillation code.

A grid point is a (width, depth, channel cap) of the detector family: the distillation
config gets those as its ``width``/``depth``/``max_channels`` keys (see
:class:`distill.train_config.TrainConfig`), on top of the matching preset when there is one.
Checkpoints store their ``scale``, so the student loads everywhere (export, eval,
teachers) under its name (``w0.25-d0.67`` off the presets).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from distill.auto.grid import Candidate, matching_preset
from runtime.errors import ConfigError

DENSE_ONLY_TERMS = ("ld", "feature", "cwd", "attention")


def architecture_keys(candidate: Candidate) -> dict[str, object]:
    """The config keys that build ``candidate``'s architecture: its preset's name, or a
    base preset plus explicit width/depth/channel cap."""
    preset = matching_preset(candidate)
    if preset is not None:
        return {"model": preset, "width": 0.0, "depth": 0.0, "max_channels": 0}
    return {
        "model": "nano",
        "width": candidate.width,
        "depth": candidate.depth,
        "max_channels": candidate.max_channels,
    }


def method_for_teacher(cfg, teacher: str | Path) -> tuple[object, str]:
    """(config, method) for a teacher: an external ONNX teacher teaches through pseudo-
    labels and soft scores only, so a method needing its box distributions or features
    (hybrid with ld/feature, ld, feature, cwd, attention) becomes ``logit`` for it."""
    kd = cfg.kd
    if Path(teacher).suffix.lower() == ".onnx" and any(t in DENSE_ONLY_TERMS for t in kd.terms):
        return dataclasses.replace(cfg, kd=dataclasses.replace(kd, method="logit")), "logit"
    label = f"hybrid ({'+'.join(kd.hybrid)})" if kd.method == "hybrid" else kd.method
    return cfg, label


def distill_candidate(
    candidate: Candidate,
    cfg,
    teacher: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    unlabelled: str | Path | None = None,
    overrides: dict[str, object] | None = None,
    progress: bool = True,
) -> tuple[Path, str]:
    """Distil ``candidate`` from ``teacher`` with ``cfg`` (a DistillConfig; its
    architecture keys and ``img_size`` are replaced by the candidate's, ``overrides``
    replace more keys), resuming from ``out_dir/last.pt`` if present.

    Returns (model.pt, method label)."""
    from distill.config import to_dict
    from distill.distillation import distill

    cfg, method = method_for_teacher(cfg, teacher)
    run_cfg = dataclasses.replace(
        cfg, **architecture_keys(candidate), img_size=candidate.input, **(overrides or {})
    )
    out = Path(out_dir)
    _check_same_run(
        out,
        {
            "config": to_dict(run_cfg),
            "teacher": str(teacher),
            "data": str(data),
            "unlabelled": str(unlabelled or ""),
        },
    )
    if (out / "model.pt").is_file():
        return out / "model.pt", method
    path = distill(
        run_cfg,
        str(teacher),
        str(data),
        str(out),
        unlabelled=str(unlabelled) if unlabelled else None,
        resume=True,
        progress=progress,
    )
    return Path(path), method


def _check_same_run(out: Path, identity: dict) -> None:
    """Resume only the same run: ``out/auto_run.json`` records what a folder was started
    with; a different config, teacher or data is a ConfigError (not a silent mix)."""
    from distill.auto.store import read_json, write_json

    path = out / "auto_run.json"
    stored = read_json(path)
    if stored is None:
        write_json(path, identity)
    elif stored != identity:
        changed = sorted(k for k in identity if stored.get(k) != identity[k])
        raise ConfigError(
            f"{out}: this folder holds a run started with a different {', '.join(changed)}; "
            "use another --out, or delete the folder to start over"
        )

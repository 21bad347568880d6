"""Distil a student at any grid point with the existing distillation code.

``TrainConfig.model`` must name a preset today (``train`` builds
``build_detector(PRESETS[cfg.model])`` and ``distill`` reads the student's channels the
same way). A grid point that is not a preset is therefore made a preset *for the duration
of the call* (:func:`family_point`): its name (``w0.25-d0.67``) is added to the PRESETS
mapping and removed afterwards. Checkpoints store their ``scale``, so the student written
this way loads everywhere (export, eval, teachers) without that name.

The native alternative (for the lead; not done here): give ``TrainConfig`` optional
``width``/``depth`` fields and build ``Scale(cfg.width or preset.width, ...)`` in ``train``
and ``distill`` -- then this module only sets two config keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.auto.grid import Candidate, matching_preset
from distill.models.presets import PRESETS
from runtime.errors import ConfigError

DENSE_ONLY_TERMS = ("ld", "feature", "cwd", "attention")


@contextmanager
def family_point(candidate: Candidate) -> Iterator[str]:
    """Yield a model name that ``TrainConfig``/``train``/``distill`` accept for the
    candidate's architecture: its preset name when it is one, else a name registered in
    PRESETS until the block ends. Not thread-safe (the CLI runs one at a time)."""
    preset = matching_preset(candidate)
    if preset is not None:
        yield preset
        return
    name = candidate.model_name
    existing = PRESETS.get(name)
    if existing is not None and existing != candidate.scale:
        raise ConfigError(f"model name {name!r} is already a different preset")
    PRESETS[name] = candidate.scale
    try:
        yield name
    finally:
        if existing is None:
            PRESETS.pop(name, None)


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
    """Distil ``candidate`` from ``teacher`` with ``cfg`` (a DistillConfig; its ``model``
    and ``img_size`` are replaced by the candidate's, ``overrides`` replace more keys),
    resuming from ``out_dir/last.pt`` if present. Returns (model.pt, method label)."""
    from distill.config import to_dict
    from distill.distillation import distill

    cfg, method = method_for_teacher(cfg, teacher)
    with family_point(candidate) as model_name:
        run_cfg = dataclasses.replace(
            cfg, model=model_name, img_size=candidate.input, **(overrides or {})
        )
        out = Path(out_dir)
        _check_same_run(out, {"config": to_dict(run_cfg), "teacher": str(teacher),
                              "data": str(data), "unlabelled": str(unlabelled or "")})  # fmt: skip
        if (out / "model.pt").is_file():
            return out / "model.pt", method
        path = distill(
            run_cfg, str(teacher), str(data), str(out),
            unlabelled=str(unlabelled) if unlabelled else None, resume=True, progress=progress,
        )  # fmt: skip
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

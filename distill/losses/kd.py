"""Knowledge-distillation losses between a student and a teacher of the detector family.

Both detectors see the same input size with strides 8/16/32, so their outputs line up
anchor by anchor: A anchors, level by level (stride 8 first), row-major within a level
(the layout in ``runtime/model_spec.py``). Shapes used below:

- class logits (B, A, C), pre-sigmoid (scores are per-class sigmoids, not a softmax);
- box-edge distribution logits (B, A, 4, R), R = ``reg_max`` DFL bins per edge;
- neck features: dict level name -> (B, C_l, H_l, W_l), names "p3", "p4", "p5"; the
  student's and teacher's channel counts differ, H_l and W_l match;
- per-anchor weights (B, A) or per-level spatial masks (B, 1, H_l, W_l), floats >= 0.

Every loss returns a 0-dim float32 tensor. Inputs may be bf16 (autocast): the losses are
computed in float32. Teacher tensors, weights and masks are detached, so gradients reach
only the student (and the adapters). The functions hold no state; the one module here,
:class:`FeatureAdapters`, is training-only and never part of a student checkpoint. The
foreground-mask helpers live in ``distill/losses/kd_masks.py`` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill import ddp
from distill.losses.kd_masks import boxes_to_level_masks, scores_to_level_masks

__all__ = [
    "FeatureAdapters",
    "attention_kd",
    "attention_map",
    "boxes_to_level_masks",
    "channel_wise_kd",
    "feature_kd",
    "hybrid_kd",
    "localization_kd",
    "logit_kd",
    "scores_to_level_masks",
]

_EPS = 1e-12  # floor of normalizing denominators: an empty mask gives a zero loss, not NaN


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not t > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return t


def _check_weight(weight: Tensor, shape: torch.Size, what: str) -> Tensor:
    if weight.shape != shape:
        raise ValueError(f"{what}: weight shape {tuple(weight.shape)} != {tuple(shape)}")
    return weight.detach().float()


def _weighted_mean(per_anchor: Tensor, weight: Tensor | None) -> Tensor:
    """Σ w·x / max(Σ w, eps) over (B, A); the plain mean when ``weight`` is None."""
    if weight is None:
        return per_anchor.mean()
    return (per_anchor * weight).sum() / ddp.denominator(weight.sum(), _EPS)


def logit_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    """Hinton-style KD for per-class sigmoid scores.

    Each class at each anchor is a binary distribution ``(p, 1 - p)`` with
    ``p = sigmoid(logit / T)``. The loss is the binary KL(teacher ‖ student) summed over
    the C classes (the KL between the two products of independent Bernoullis), times T²
    so that gradient magnitudes stay comparable across temperatures, then averaged over
    anchors: ``Σ_{b,a} w·KL / Σ w`` (the plain mean over B·A anchors when ``weight`` is
    None). It is exactly zero when the logits are equal.

    Args:
        student_logits: (B, A, C) pre-sigmoid class logits of the student.
        teacher_logits: (B, A, C) pre-sigmoid class logits of the teacher (detached).
        temperature: T > 0.
        weight: optional (B, A) per-anchor weights >= 0, e.g. the teacher's max class
            score so that foreground counts more. All-zero weights give a zero loss.
    """
    if student_logits.dim() != 3 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"logit_kd: expected two (B, A, C) tensors of one shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    t_ = _check_temperature(temperature)
    s = student_logits.float() / t_
    t = teacher_logits.detach().float() / t_
    w = None if weight is None else _check_weight(weight, s.shape[:2], "logit_kd")
    p_t = torch.sigmoid(t)
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1.0 - p_t) * (
        F.logsigmoid(-t) - F.logsigmoid(-s)
    )
    return _weighted_mean(kl.sum(-1) * (t_ * t_), w)


def localization_kd(
    student_dist: Tensor,
    teacher_dist: Tensor,
    temperature: float,
    weight: Tensor,
) -> Tensor:
    """Localization distillation (LD): KL between DFL box-edge distributions.

    For each of the 4 edges (left, top, right, bottom) the R bin logits are a softmax
    distribution at temperature T. Per anchor: KL(teacher ‖ student) summed over the
    bins, averaged over the 4 edges, times T². Only anchors with ``weight > 0`` take
    part (the others are masked out before the softmax, so even non-finite values there
    give a finite loss and zero gradients), and the result is ``Σ w·KL / Σ w``; no
    positives gives a zero loss with zero gradients.

    Args:
        student_dist: (B, A, 4, R) student DFL logits.
        teacher_dist: (B, A, 4, R) teacher DFL logits (detached).
        temperature: T > 0.
        weight: (B, A) weights >= 0: the teacher's max score or the assigner's positives.
    """
    if (
        student_dist.dim() != 4
        or student_dist.shape[2] != 4
        or student_dist.shape != teacher_dist.shape
    ):
        raise ValueError(
            f"localization_kd: expected two (B, A, 4, R) tensors of one shape, got "
            f"{tuple(student_dist.shape)} and {tuple(teacher_dist.shape)}"
        )
    t_ = _check_temperature(temperature)
    w = _check_weight(weight, student_dist.shape[:2], "localization_kd")
    pos = (w > 0)[..., None, None]  # (B, A, 1, 1); other anchors get uniform dummies
    s = torch.where(pos, student_dist.float(), 0.0)
    t = torch.where(pos, teacher_dist.detach().float(), 0.0)
    log_ps = F.log_softmax(s / t_, dim=-1)
    log_pt = F.log_softmax(t / t_, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean(-1) * (t_ * t_)  # (B, A)
    return _weighted_mean(kl, w)


class FeatureAdapters(nn.ModuleDict):
    """One learnable 1×1 conv per level mapping student channels to teacher channels.

    Training-only: keep it out of the student's ``state_dict`` (it is not a submodule of
    the student) and give its parameters to the optimizer alongside the student's.
    """

    def __init__(
        self, student_channels: Mapping[str, int], teacher_channels: Mapping[str, int]
    ) -> None:
        if set(student_channels) != set(teacher_channels):
            raise ValueError(
                f"FeatureAdapters: student levels {sorted(student_channels)} != teacher "
                f"levels {sorted(teacher_channels)}"
            )
        convs = {}
        for name, c_s in student_channels.items():
            c_t = teacher_channels[name]
            if int(c_s) <= 0 or int(c_t) <= 0:
                raise ValueError(f"FeatureAdapters: level {name} has channels {c_s} -> {c_t}")
            convs[name] = nn.Conv2d(int(c_s), int(c_t), kernel_size=1)
        super().__init__(convs)

    def adapt(self, name: str, x: Tensor) -> Tensor:
        """(B, C_s, H, W) -> (B, C_t, H, W) for level ``name``."""
        if name not in self:
            raise ValueError(f"FeatureAdapters: no adapter for level {name!r}")
        conv = self[name]
        return conv(x.to(conv.weight.dtype))  # autocast, when on, still picks the op dtype


def _aligned_pair(
    name: str,
    student_feats: Mapping[str, Tensor],
    teacher_feats: Mapping[str, Tensor],
    adapters: FeatureAdapters | None,
) -> tuple[Tensor, Tensor]:
    """Student (through its adapter) and detached teacher features of one level, float32."""
    if name not in teacher_feats:
        raise ValueError(f"teacher features have no level {name!r} (has {sorted(teacher_feats)})")
    s = student_feats[name]
    if adapters is not None:
        s = adapters.adapt(name, s)
    s, t = s.float(), teacher_feats[name].detach().float()
    if s.dim() != 4 or s.shape != t.shape:
        raise ValueError(
            f"level {name}: student features {tuple(s.shape)} (after the adapter) do not "
            f"match teacher features {tuple(t.shape)}; build FeatureAdapters with the "
            "teacher's channel counts"
        )
    return s, t


def _standardize(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per image and channel over the H×W positions."""
    var, mean = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


def feature_kd(
    student_feats: Mapping[str, Tensor],
    teacher_feats: Mapping[str, Tensor],
    adapters: FeatureAdapters | None = None,
    mask: Mapping[str, Tensor] | None = None,
    normalize: bool = False,
    background_weight: float = 0.0,
) -> Tensor:
    """Feature imitation: FitNet MSE, or MSE restricted to a foreground mask.

    The student's features of each level go through its 1×1 adapter (C_s -> C_t; pass
    ``adapters=None`` only when the channel counts already match). With ``mask=None``
    this is FitNet's plain MSE: mean squared difference over every element of every
    level, each cell counting once whatever its level (so p3 weighs most by area). With
    a mask (fine-grained feature imitation / the foreground part of FGD) it is
    ``Σ_l Σ m·‖s - t‖² / Σ_l Σ m·C_t``: the masked squared error normalized by the mask
    area × channels, pooled over levels; an all-zero mask gives zero. With
    ``background_weight > 0`` a second term of the same form over the cells where the
    mask is 0 is added with that weight (FGD's separate background term).

    Args:
        student_feats: level name -> (B, C_s, H, W) student neck features.
        teacher_feats: level name -> (B, C_t, H, W) teacher neck features (detached).
        adapters: the :class:`FeatureAdapters` for these levels.
        mask: optional level name -> (B, 1, H, W) weights in [0, 1], e.g. from
            :func:`boxes_to_level_masks` or :func:`scores_to_level_masks`.
        normalize: standardize both features per image and channel over H×W first
            (PKD-style), which makes the loss blind to the teacher's feature scale.
        background_weight: weight of the background term (0 = foreground only).
    """
    if not student_feats:
        raise ValueError("feature_kd: no student feature levels given")
    fg_num, fg_den, bg_num, bg_den = [], [], [], []
    for name in student_feats:
        s, t = _aligned_pair(name, student_feats, teacher_feats, adapters)
        if normalize:
            s, t = _standardize(s), _standardize(t)
        sq = (s - t).pow(2).sum(1, keepdim=True)  # (B, 1, H, W), summed over channels
        if mask is None:
            m = torch.ones_like(sq)
        else:
            if name not in mask:
                raise ValueError(f"feature_kd: mask has no level {name!r}")
            m = mask[name].detach().float()
            if m.shape != sq.shape:
                raise ValueError(f"feature_kd: mask {name} is {tuple(m.shape)}, want {sq.shape}")
        channels = float(t.shape[1])
        fg_num.append((sq * m).sum())
        fg_den.append(m.sum() * channels)
        if background_weight > 0.0:
            bg = (m <= 0).float()
            bg_num.append((sq * bg).sum())
            bg_den.append(bg.sum() * channels)
    loss = torch.stack(fg_num).sum() / ddp.denominator(torch.stack(fg_den).sum(), _EPS)
    if bg_num:
        bg_loss = torch.stack(bg_num).sum() / ddp.denominator(torch.stack(bg_den).sum(), _EPS)
        loss = loss + background_weight * bg_loss
    return loss


def channel_wise_kd(
    student_feats: Mapping[str, Tensor],
    teacher_feats: Mapping[str, Tensor],
    adapters: FeatureAdapters | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Channel-wise distillation (CWD).

    Each channel's H×W activations become a distribution by a softmax over the positions
    at temperature T; the loss is KL(teacher ‖ student) summed over positions, times T²,
    averaged over channels and images, then averaged over levels. Adding a constant to
    a channel changes nothing (the softmax is shift-invariant).

    Args:
        student_feats: level name -> (B, C_s, H, W); adapted to C_t by ``adapters``.
        teacher_feats: level name -> (B, C_t, H, W) (detached).
        adapters: :class:`FeatureAdapters`, or None when the channel counts match.
        temperature: T > 0.
    """
    t_ = _check_temperature(temperature)
    if not student_feats:
        raise ValueError("channel_wise_kd: no student feature levels given")
    per_level = []
    for name in student_feats:
        s, t = _aligned_pair(name, student_feats, teacher_feats, adapters)
        log_ps = F.log_softmax(s.flatten(2) / t_, dim=-1)  # (B, C, H*W)
        log_pt = F.log_softmax(t.flatten(2) / t_, dim=-1)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)  # (B, C)
        per_level.append(kl.mean() * (t_ * t_))
    return torch.stack(per_level).mean()


def attention_map(features: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention map: mean over channels of |f|^p, flattened, L2-normalized.

    (B, C, H, W) -> (B, H*W) float32, unit L2 norm per image (all zeros for all-zero
    features).
    """
    a = features.float().abs().pow(p).mean(1).flatten(1)
    return F.normalize(a, p=2.0, dim=1, eps=_EPS)


def attention_kd(
    student_feats: Mapping[str, Tensor],
    teacher_feats: Mapping[str, Tensor],
    p: float = 2.0,
) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis).

    Per level: squared L2 distance between the student's and teacher's
    :func:`attention_map`, summed over positions and averaged over images (in [0, 2]
    since the maps are non-negative unit vectors), then averaged over levels. Channel
    counts may differ (no adapter); the feature scale does not matter.

    Args:
        student_feats: level name -> (B, C_s, H, W).
        teacher_feats: level name -> (B, C_t, H, W) (detached).
        p: exponent of |f| (2 in the paper).
    """
    if not student_feats:
        raise ValueError("attention_kd: no student feature levels given")
    per_level = []
    for name, s in student_feats.items():
        if name not in teacher_feats:
            raise ValueError(f"attention_kd: teacher features have no level {name!r}")
        t = teacher_feats[name].detach()
        if s.dim() != 4 or s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(
                f"attention_kd: level {name} student {tuple(s.shape)} vs "
                f"teacher {tuple(t.shape)}: batch and H, W must match"
            )
        diff = attention_map(s, p) - attention_map(t, p)
        per_level.append(diff.pow(2).sum(1).mean())
    return torch.stack(per_level).mean()


def hybrid_kd(
    terms: Mapping[str, Tensor], weights: Mapping[str, float]
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of KD terms, plus each term's weighted value for the loss log.

    Args:
        terms: name -> 0-dim loss tensor (e.g. {"logit": ..., "ld": ..., "feature": ...}).
        weights: name -> weight; every term needs one, and a non-zero weight for a term
            that was not computed is an error (a misspelt name would silently do nothing).
    Returns:
        (total, logs): total = Σ weight·term (float32, terms with weight 0 left out);
        logs = name -> weight·term as a detached Python float (one host sync for all).
    """
    if not terms:
        raise ValueError("hybrid_kd: no terms given")
    missing = [k for k in terms if k not in weights]
    if missing:
        raise ValueError(f"hybrid_kd: no weight for term(s) {missing}")
    unknown = [k for k, w in weights.items() if k not in terms and float(w) != 0.0]
    if unknown:
        raise ValueError(f"hybrid_kd: weight(s) given for term(s) {unknown} that were not computed")
    for k, v in terms.items():
        if v.dim() != 0:
            raise ValueError(f"hybrid_kd: term {k!r} has shape {tuple(v.shape)}, want a scalar")
    weighted = {
        k: v.float() * float(weights[k]) for k, v in terms.items() if float(weights[k]) != 0.0
    }
    device = next(iter(terms.values())).device
    total = (
        torch.stack(list(weighted.values())).sum() if weighted else (torch.zeros((), device=device))
    )
    values = torch.stack([v.detach() for v in weighted.values()]).tolist() if weighted else []
    logged = dict(zip(weighted, values))
    return total, {k: logged.get(k, 0.0) for k in terms}

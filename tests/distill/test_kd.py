"""Defining properties of the KD losses in distill/losses/kd.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.losses.kd import (
    FeatureAdapters,
    attention_kd,
    attention_map,
    boxes_to_level_masks,
    channel_wise_kd,
    feature_kd,
    hybrid_kd,
    localization_kd,
    logit_kd,
)

B, C, R = 2, 5, 16
IMAGE = (64, 96)  # (H, W) of the network input
LEVELS = {"p3": (8, 12), "p4": (4, 6), "p5": (2, 3)}  # strides 8/16/32
A = sum(h * w for h, w in LEVELS.values())  # 96 + 24 + 6 = 126
STUDENT_CH = {"p3": 4, "p4": 8, "p5": 16}
TEACHER_CH = {"p3": 6, "p4": 12, "p5": 24}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _feats(channels: dict[str, int], seed: int, grad: bool = False) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    return {
        n: torch.randn(B, c, *LEVELS[n], generator=g).requires_grad_(grad)
        for n, c in channels.items()
    }


def _adapters() -> FeatureAdapters:
    torch.manual_seed(0)
    return FeatureAdapters(STUDENT_CH, TEACHER_CH)


def _anchor_weight() -> torch.Tensor:
    w = torch.zeros(B, A)
    w[0, 3], w[0, 100], w[1, 7] = 1.0, 0.5, 0.25
    return w


# ---------------------------------------------------------------- logit KD


def _binary_kl_by_hand(s: torch.Tensor, t: torch.Tensor, temp: float) -> torch.Tensor:
    s, t = s.double(), t.double()
    p, q = torch.sigmoid(t / temp), torch.sigmoid(s / temp)
    return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))  # (B, A, C)


def test_logit_kd_zero_when_equal_and_positive_when_different() -> None:
    t = torch.randn(B, A, C, generator=_gen(1)) * 3
    for temp in (1.0, 4.0):
        assert logit_kd(t.clone(), t, temp).item() == 0.0
        assert logit_kd(t + 0.5 * torch.randn(B, A, C, generator=_gen(2)), t, temp).item() > 0


@pytest.mark.parametrize("temp", [1.0, 2.0, 5.0])
def test_logit_kd_is_t_squared_times_kl_at_t(temp: float) -> None:
    s = torch.randn(B, A, C, generator=_gen(3))
    t = torch.randn(B, A, C, generator=_gen(4))
    expected = temp**2 * _binary_kl_by_hand(s, t, temp).sum(-1).mean()
    assert logit_kd(s, t, temp).item() == pytest.approx(expected.item(), rel=1e-5)
    w = _anchor_weight()
    kl = _binary_kl_by_hand(s, t, temp).sum(-1)
    expected_w = temp**2 * (kl * w.double()).sum() / w.double().sum()
    assert logit_kd(s, t, temp, w).item() == pytest.approx(expected_w.item(), rel=1e-5)


def test_logit_kd_t_squared_keeps_small_differences_the_same_order() -> None:
    # For small differences KL at T is ~ (Δ/T)² σ'(t/T) /2, so × T² keeps it O(Δ²).
    t = torch.zeros(B, A, C)
    s = t + 0.01 * torch.randn(B, A, C, generator=_gen(5))
    low, high = logit_kd(s, t, 1.0).item(), logit_kd(s, t, 8.0).item()
    assert 0.5 < high / low < 2.0


def test_logit_kd_weight_restricts_to_weighted_anchors() -> None:
    t = torch.randn(B, A, C, generator=_gen(6))
    s = t + torch.randn(B, A, C, generator=_gen(7))
    w = _anchor_weight()
    base = logit_kd(s, t, 2.0, w)
    s_bg = s.clone()
    s_bg[w == 0] += 10.0
    assert torch.equal(logit_kd(s_bg, t, 2.0, w), base)
    s_fg = s.clone()
    s_fg[0, 3] += 1.0
    assert logit_kd(s_fg, t, 2.0, w).item() != base.item()
    zero = logit_kd(s, t, 2.0, torch.zeros(B, A))
    assert zero.item() == 0.0 and torch.isfinite(zero)


def test_logit_kd_gradients_reach_student_not_teacher_and_bf16_is_computed_in_fp32() -> None:
    s = torch.randn(B, A, C, generator=_gen(8)).requires_grad_(True)
    t = torch.randn(B, A, C, generator=_gen(9)).requires_grad_(True)
    logit_kd(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    s16, t16 = s.detach().bfloat16(), t.detach().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = logit_kd(s16, t16, 2.0)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(logit_kd(s16.float(), t16.float(), 2.0).item(), rel=1e-6)


# ---------------------------------------------------------------- localization distillation


def test_ld_zero_when_equal_and_t_squared_times_kl_by_hand() -> None:
    t = torch.randn(B, A, 4, R, generator=_gen(10)) * 2
    s = torch.randn(B, A, 4, R, generator=_gen(11)) * 2
    w = _anchor_weight()
    assert localization_kd(t.clone(), t, 10.0, w).item() == 0.0
    for temp in (1.0, 10.0):
        p = torch.softmax(t.double() / temp, -1)
        q = torch.softmax(s.double() / temp, -1)
        kl = (p * (p / q).log()).sum(-1).mean(-1)  # (B, A)
        expected = temp**2 * (kl * w.double()).sum() / w.double().sum()
        got = localization_kd(s, t, temp, w)
        assert got.item() > 0
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ld_masking_and_no_positives() -> None:
    t = torch.randn(B, A, 4, R, generator=_gen(12))
    s = torch.randn(B, A, 4, R, generator=_gen(13)).requires_grad_(True)
    w = _anchor_weight()
    base = localization_kd(s, t, 4.0, w)
    s_bg = s.detach().clone()
    s_bg[w == 0] = float("inf")  # even non-finite values at zero-weight anchors are ignored
    assert torch.equal(localization_kd(s_bg, t, 4.0, w), base.detach())
    s_fg = s.detach().clone()
    s_fg[1, 7, 2, 0] += 3.0  # one bin (a shift of all bins is softmax-invariant)
    assert localization_kd(s_fg, t, 4.0, w).item() != base.item()
    s_inf = s.detach().clone()
    s_inf[w == 0] = float("inf")
    s_inf.requires_grad_(True)
    localization_kd(s_inf, t, 4.0, w).backward()
    assert torch.isfinite(s_inf.grad).all() and s_inf.grad[w == 0].abs().sum() == 0
    empty = localization_kd(s, t, 4.0, torch.zeros(B, A))
    empty.backward()
    assert empty.item() == 0.0
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() == 0


def test_ld_gradients_reach_student_not_teacher() -> None:
    s = torch.randn(B, A, 4, R, generator=_gen(14)).requires_grad_(True)
    t = torch.randn(B, A, 4, R, generator=_gen(15)).requires_grad_(True)
    localization_kd(s, t, 10.0, _anchor_weight()).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = localization_kd(s.detach().bfloat16(), t.detach().bfloat16(), 10.0, _anchor_weight())
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_ld_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="B, A, 4, R"):
        localization_kd(torch.zeros(B, A, 64), torch.zeros(B, A, 64), 1.0, torch.ones(B, A))
    with pytest.raises(ValueError, match="temperature"):
        localization_kd(torch.zeros(B, A, 4, R), torch.zeros(B, A, 4, R), 0.0, torch.ones(B, A))


# ---------------------------------------------------------------- feature KD and masks


def test_feature_adapters_shapes_and_fitnet_mse_per_level() -> None:
    adapters = _adapters()
    s, t = _feats(STUDENT_CH, 20), _feats(TEACHER_CH, 21)
    for name, (h, w) in LEVELS.items():
        assert adapters.adapt(name, s[name]).shape == (B, TEACHER_CH[name], h, w)
    num = sum(((adapters.adapt(n, s[n]) - t[n]) ** 2).sum() for n in LEVELS)
    den = sum(t[n].numel() for n in LEVELS)
    got = feature_kd(s, t, adapters)
    assert got.item() == pytest.approx((num / den).item(), rel=1e-5)
    ones = {n: torch.ones(B, 1, *LEVELS[n]) for n in LEVELS}
    assert feature_kd(s, t, adapters, mask=ones).item() == pytest.approx(got.item(), rel=1e-6)
    assert feature_kd(t, t).item() == 0.0  # same features, no adapter needed


def test_feature_kd_gradients_reach_student_and_adapters_not_teacher() -> None:
    adapters = _adapters()
    s, t = _feats(STUDENT_CH, 22, grad=True), _feats(TEACHER_CH, 23, grad=True)
    feature_kd(s, t, adapters).backward()
    for n in LEVELS:
        assert s[n].grad is not None and s[n].grad.abs().sum() > 0
        assert t[n].grad is None
        assert adapters[n].weight.grad is not None and adapters[n].weight.grad.abs().sum() > 0


def test_feature_kd_zero_when_adapted_student_equals_teacher() -> None:
    adapters = _adapters()
    s = _feats(STUDENT_CH, 24)
    with torch.no_grad():
        t = {n: adapters.adapt(n, s[n]) for n in LEVELS}
    assert feature_kd(s, t, adapters).item() == 0.0
    assert channel_wise_kd(s, t, adapters, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_feature_kd_mask_restricts_to_foreground() -> None:
    adapters = _adapters()
    s, t = _feats(STUDENT_CH, 25), _feats(TEACHER_CH, 26)
    boxes = [torch.tensor([[8.0, 8.0, 24.0, 16.0]]), torch.zeros(0, 4)]
    mask = boxes_to_level_masks(boxes, IMAGE, LEVELS)
    base = feature_kd(s, t, adapters, mask=mask)
    s_bg = {n: torch.where(mask[n] > 0, s[n], s[n] + 5.0) for n in LEVELS}
    assert feature_kd(s_bg, t, adapters, mask=mask).item() == pytest.approx(base.item(), rel=1e-6)
    s_fg = {n: torch.where(mask[n] > 0, s[n] + 1.0, s[n]) for n in LEVELS}
    assert feature_kd(s_fg, t, adapters, mask=mask).item() != pytest.approx(base.item(), rel=1e-3)
    # The background term sees exactly the cells the foreground term ignores.
    with_bg = feature_kd(s_bg, t, adapters, mask=mask, background_weight=0.5)
    with torch.no_grad():
        sq = {n: ((adapters.adapt(n, s_bg[n]) - t[n]) ** 2).sum(1, keepdim=True) for n in LEVELS}
    bg_num = sum((sq[n] * (mask[n] == 0)).sum() for n in LEVELS)
    bg_den = sum((mask[n] == 0).sum() * TEACHER_CH[n] for n in LEVELS)
    expected_bg = 0.5 * (bg_num / bg_den).item()
    assert with_bg.item() - base.item() == pytest.approx(expected_bg, rel=1e-5)
    zero = {n: torch.zeros(B, 1, *LEVELS[n]) for n in LEVELS}
    empty = feature_kd(s, t, adapters, mask=zero)
    assert empty.item() == 0.0 and torch.isfinite(empty)
    only_bg = feature_kd(s, t, adapters, mask=zero, background_weight=1.0)
    assert only_bg.item() == pytest.approx(feature_kd(s, t, adapters).item(), rel=1e-6)


def test_feature_kd_normalize_ignores_teacher_scale_and_offset() -> None:
    s, t = _feats(TEACHER_CH, 27), _feats(TEACHER_CH, 28)
    t_scaled = {n: 7.0 * v + 3.0 for n, v in t.items()}
    plain = feature_kd(s, t, normalize=True).item()
    assert feature_kd(s, t_scaled, normalize=True).item() == pytest.approx(plain, rel=1e-4)
    assert feature_kd(s, t_scaled).item() != pytest.approx(feature_kd(s, t).item(), rel=1e-2)


def test_feature_kd_rejects_unadapted_channel_mismatch() -> None:
    with pytest.raises(ValueError, match="FeatureAdapters"):
        feature_kd(_feats(STUDENT_CH, 29), _feats(TEACHER_CH, 30))


# ---------------------------------------------------------------- channel-wise distillation


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_cwd_is_t_squared_times_spatial_kl(temp: float) -> None:
    s, t = _feats(TEACHER_CH, 31), _feats(TEACHER_CH, 32)
    per_level = []
    for n in LEVELS:
        p = torch.softmax(t[n].double().flatten(2) / temp, -1)
        q = torch.softmax(s[n].double().flatten(2) / temp, -1)
        per_level.append((p * (p / q).log()).sum(-1).mean())
    expected = temp**2 * torch.stack(per_level).mean()
    got = channel_wise_kd(s, t, None, temp)
    assert got.item() > 0
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert channel_wise_kd(t, t, None, temp).item() == 0.0


def test_cwd_invariant_to_a_constant_added_to_a_channel() -> None:
    adapters = _adapters()
    s, t = _feats(STUDENT_CH, 33), _feats(TEACHER_CH, 34)
    base = channel_wise_kd(s, t, adapters, 2.0).item()
    t_shift = {n: v.clone() for n, v in t.items()}
    t_shift["p4"][:, 3] += 11.0
    assert channel_wise_kd(s, t_shift, adapters, 2.0).item() == pytest.approx(base, rel=1e-4)
    # A per-channel constant on the student input is a per-channel constant after the 1x1 conv.
    s_shift = {n: v.clone() for n, v in s.items()}
    s_shift["p3"][:, 1] -= 4.0
    assert channel_wise_kd(s_shift, t, adapters, 2.0).item() == pytest.approx(base, rel=1e-4)
    # A non-constant change is seen.
    s_bump = {n: v.clone() for n, v in s.items()}
    s_bump["p3"][:, 1, 0, 0] += 4.0
    assert channel_wise_kd(s_bump, t, adapters, 2.0).item() != pytest.approx(base, rel=1e-3)


def test_cwd_gradients_reach_student_and_adapters_not_teacher() -> None:
    adapters = _adapters()
    s, t = _feats(STUDENT_CH, 35, grad=True), _feats(TEACHER_CH, 36, grad=True)
    channel_wise_kd(s, t, adapters, 1.0).backward()
    for n in LEVELS:
        assert s[n].grad.abs().sum() > 0 and t[n].grad is None
        assert adapters[n].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- attention transfer


def test_attention_maps_are_unit_norm_and_nonnegative() -> None:
    for n, f in _feats(STUDENT_CH, 37).items():
        a = attention_map(f)
        assert a.shape == (B, LEVELS[n][0] * LEVELS[n][1])
        assert torch.allclose(a.norm(dim=1), torch.ones(B), atol=1e-6)
        assert (a >= 0).all()
    zero = attention_map(torch.zeros(B, 3, 4, 4))
    assert torch.isfinite(zero).all() and zero.abs().sum() == 0


def test_attention_kd_properties_across_channel_counts() -> None:
    t = _feats(TEACHER_CH, 38)
    assert attention_kd(t, t).item() == 0.0
    # Different channel counts and scale: duplicated, scaled channels give the same maps.
    s_same = {n: 3.0 * torch.cat([v, v], dim=1) for n, v in t.items()}
    assert attention_kd(s_same, t).item() == pytest.approx(0.0, abs=1e-6)
    s = _feats(STUDENT_CH, 39, grad=True)
    t_grad = {n: v.clone().requires_grad_(True) for n, v in t.items()}
    loss = attention_kd(s, t_grad)
    expected = torch.stack(
        [((attention_map(s[n]) - attention_map(t[n])) ** 2).sum(1).mean() for n in LEVELS]
    ).mean()
    assert 0 < loss.item() <= 2.0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    for n in LEVELS:
        assert s[n].grad.abs().sum() > 0 and t_grad[n].grad is None


def test_attention_kd_bf16_autocast() -> None:
    s, t = _feats(STUDENT_CH, 40), _feats(TEACHER_CH, 41)
    s16 = {n: v.bfloat16() for n, v in s.items()}
    t16 = {n: v.bfloat16() for n, v in t.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention_kd(s16, t16)
        out_f = feature_kd(s16, t16, _adapters())
    assert out.dtype == torch.float32 and out_f.dtype == torch.float32
    assert torch.isfinite(out) and torch.isfinite(out_f)


# ---------------------------------------------------------------- hybrid


def test_hybrid_combines_weighted_terms_and_logs_each() -> None:
    s = torch.randn(B, A, C, generator=_gen(42)).requires_grad_(True)
    t = torch.randn(B, A, C, generator=_gen(43))
    terms = {"logit": logit_kd(s, t, 2.0), "attention": F.mse_loss(s, t)}
    total, logs = hybrid_kd(terms, {"logit": 2.0, "attention": 0.5, "cwd": 0.0})
    expected = 2.0 * terms["logit"] + 0.5 * terms["attention"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(logs) == {"logit", "attention"}
    assert all(isinstance(v, float) for v in logs.values())
    assert logs["logit"] == pytest.approx(2.0 * terms["logit"].item(), rel=1e-6)
    assert logs["attention"] == pytest.approx(0.5 * terms["attention"].item(), rel=1e-6)
    total.backward()
    assert s.grad.abs().sum() > 0


def test_hybrid_rejects_missing_or_unused_weights() -> None:
    term = {"logit": torch.tensor(1.0)}
    with pytest.raises(ValueError, match="no weight"):
        hybrid_kd(term, {"ld": 1.0})
    with pytest.raises(ValueError, match="not computed"):
        hybrid_kd(term, {"logit": 1.0, "ld": 1.0})
    total, logs = hybrid_kd(term, {"logit": 0.0})
    assert total.item() == 0.0 and logs == {"logit": 0.0}

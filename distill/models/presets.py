"""Size presets of the one detector family, from a single width/depth scaling rule.

widths  = round8(BASE_WIDTHS * width_mult), capped at ``max_channels``
depths  = max(1, round(BASE_DEPTHS * depth_mult)) bottlenecks per CSP stage
neck    = max(1, round(3 * depth_mult)) bottlenecks per neck CSP block
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.models.backbone import Backbone
from distill.models.detector import Detector
from distill.models.head import DecoupledHead
from distill.models.neck import PANNeck

BASE_WIDTHS = (64, 128, 256, 512, 1024)
BASE_DEPTHS = (3, 6, 6, 3)


@dataclass(frozen=True)
class Scale:
    """A point of the family: width and depth multipliers, channel cap."""

    width: float
    depth: float
    max_channels: int = 1024


PRESETS: dict[str, Scale] = {
    "nano": Scale(width=0.1875, depth=0.33, max_channels=256),
    "small": Scale(width=0.25, depth=0.33, max_channels=256),
    "medium": Scale(width=0.375, depth=0.67, max_channels=384),
    "large": Scale(width=0.5, depth=1.0, max_channels=512),
}


def _round8(x: float) -> int:
    return max(8, round(x / 8) * 8)


def build_detector(scale: Scale, num_classes: int, reg_max: int = 16) -> Detector:
    """Build a detector at an arbitrary point of the family (used by the presets and by
    `understudy auto`'s width/depth grid)."""
    widths = tuple(min(_round8(c * scale.width), scale.max_channels) for c in BASE_WIDTHS)
    depths = tuple(max(1, round(d * scale.depth)) for d in BASE_DEPTHS)
    backbone = Backbone(widths, depths)
    neck = PANNeck(backbone.out_channels, max(1, round(3 * scale.depth)))
    c3 = backbone.out_channels[0]
    head = DecoupledHead(
        backbone.out_channels,
        num_classes,
        reg_max=reg_max,
        box_width=max(16, c3 // 2),
        cls_width=max(16, c3 // 2),
    )
    return Detector(backbone, neck, head)


def nano(num_classes: int) -> Detector:
    """The default student."""
    return build_detector(PRESETS["nano"], num_classes)


def small(num_classes: int) -> Detector:
    return build_detector(PRESETS["small"], num_classes)


def medium(num_classes: int) -> Detector:
    return build_detector(PRESETS["medium"], num_classes)


def large(num_classes: int) -> Detector:
    """The default teacher."""
    return build_detector(PRESETS["large"], num_classes)


def build(preset: str, num_classes: int) -> Detector:
    """Build a preset by name (CLI convenience; an explicit match, not a registry)."""
    match preset:
        case "nano":
            return nano(num_classes)
        case "small":
            return small(num_classes)
        case "medium":
            return medium(num_classes)
        case "large":
            return large(num_classes)
    from runtime.errors import ConfigError

    raise ConfigError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")

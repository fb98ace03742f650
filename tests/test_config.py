"""config: overrides from text (the CLI's --set, the benchmarks), the one edit seed."""

from __future__ import annotations

import pytest

from dragdiff.config import ConfigError, EditConfig, parse_override


def test_parse_override_types_values_by_the_field() -> None:
    cfg = EditConfig()
    assert parse_override("drag.lr=0.02", cfg) == ("drag.lr", 0.02)
    assert parse_override("drag.max_iterations = 40", cfg) == ("drag.max_iterations", 40)
    assert parse_override("lora.enabled=no", cfg) == ("lora.enabled", False)
    assert parse_override("lora.alpha=none", cfg) == ("lora.alpha", None)
    assert parse_override("lora.target_modules=to_q,to_k", cfg) == ("lora.target_modules", ("to_q", "to_k"))
    assert parse_override("seed=7", cfg) == ("seed", 7)
    assert parse_override("warp.seam_px=3", cfg) == ("warp.seam_px", 3)  # None by default: an int or none
    assert parse_override("warp.seam_px=none", cfg.override(**{"warp.seam_px": 3})) == ("warp.seam_px", None)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("drag.lr", "SECTION.FIELD=VALUE"),
        ("drag=3", "SECTION.FIELD=VALUE"),
        ("drag.speed=2", "unknown config field 'drag.speed'"),
        ("lora.seed=1", "unknown config field 'lora.seed'"),  # one seed: EditConfig.seed
        ("nothing=1", "SECTION.FIELD=VALUE"),
        ("drag.lr=fast", "drag.lr must be a float"),
        ("seed=x", "seed must be a int"),
    ],
)
def test_parse_override_errors_name_the_value(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_override(text, EditConfig())


def test_with_overrides_applies_in_order_and_validates() -> None:
    cfg = EditConfig().with_overrides(["seed=3", "drag.max_iterations=10", "drag.max_iterations=12"])
    assert cfg.seed == 3 and cfg.drag.max_iterations == 12
    assert EditConfig().seed == 0  # the reference seeds the LoRA with 0
    with pytest.raises(ConfigError, match="drag.max_iterations must be >= 0"):
        EditConfig().with_overrides(["drag.max_iterations=-1"])
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        EditConfig(seed=-1)


def test_family_chosen_fields_default_to_none_and_parse_by_their_type() -> None:
    """drag.feature_up_block / supervision_scale: None = the model family's (diffusion/family.py)."""
    cfg = EditConfig()
    assert cfg.drag.feature_up_block is None and cfg.drag.supervision_scale is None
    assert parse_override("drag.feature_up_block=1", cfg) == ("drag.feature_up_block", 1)
    assert isinstance(parse_override("drag.feature_up_block=1", cfg)[1], int)
    assert parse_override("drag.supervision_scale=0.25", cfg) == ("drag.supervision_scale", 0.25)
    assert parse_override("generate.width=512", cfg) == ("generate.width", 512)  # an int, not 512.0
    assert (
        cfg.with_overrides(
            ["drag.supervision_scale=0.5", "drag.supervision_scale=none"]
        ).drag.supervision_scale
        is None
    )
    with pytest.raises(ConfigError, match="supervision_scale"):
        cfg.with_overrides(["drag.supervision_scale=2"])

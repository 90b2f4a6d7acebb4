"""Model presets: the SAM3 teacher and the three SAM3-LiteText students, described as transformers configs.

Every preset shares SAM3's vision encoder (ViT-L, 1008 px) and heads; they differ in the text encoder.
The student's position table has one row per context position, so a preset's text config depends on the
context length (16 or 32); the teacher's CLIP text encoder always holds 32 positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TEACHER = "sam3"
STUDENT = "litetext"


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # TEACHER or STUDENT: which transformers model class holds it
    text_config: dict[str, Any]
    default_context_length: int
    description: str
    context_lengths: tuple[int, ...] = (16, 32)
    # Parameters the paper reports for the text encoder with its projection to 256 (checked by tests).
    text_params_millions: float = 0.0
    # EfficientSAM3: the student image trunk that replaces the ViT (litetext.models.efficientsam3_trunks).
    image_trunk: str | None = None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="sam3",
            family=TEACHER,
            # transformers' Sam3Config defaults: CLIP text, width 1024, 24 causal layers, 32 positions.
            text_config={},
            default_context_length=32,
            context_lengths=(16, 32),
            description="SAM3 teacher: CLIP text encoder 1024 x 24, causal",
            text_params_millions=353.72,
        ),
        Preset(
            name="litetext-s0",
            family=STUDENT,
            text_config=dict(
                hidden_size=512, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=8,
                use_repmixer_blocks=True,
            ),
            default_context_length=16,
            description="MobileCLIP-S0 student: RepMixer, 4 transformer layers, RepMixer (512 wide)",
            text_params_millions=42.54,
        ),
        Preset(
            name="litetext-s1",
            family=STUDENT,
            text_config=dict(
                hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                use_repmixer_blocks=False,
            ),
            default_context_length=16,
            description="MobileCLIP-S1 student: 12 transformer layers (512 wide)",
            text_params_millions=63.53,
        ),
        Preset(
            name="litetext-l",
            family=STUDENT,
            text_config=dict(
                hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                projection_dim=768, use_repmixer_blocks=False,
            ),
            default_context_length=16,
            description="MobileCLIP2-L student: 12 transformer layers (768 wide)",
            text_params_millions=123.8,
        ),
    ]
}


def _efficientsam3_presets() -> list[Preset]:
    """EfficientSAM3: each of the nine stage-1 image trunks with each text encoder above
    (`efficientsam3-<trunk>-<text>`), and the three released full models EV-M, RV-M and TV-M (EfficientViT
    b1, RepViT m1.1, TinyViT 11m with MobileCLIP-S0 at context 16, upstream's efficientsam3_*.pt)."""
    from dataclasses import replace

    trunks = ("ev-b0", "ev-b1", "ev-b2", "rv-m0.9", "rv-m1.1", "rv-m2.3", "tv-5m", "tv-11m", "tv-21m")
    texts = {"s0": "litetext-s0", "s1": "litetext-s1", "l": "litetext-l", "sam3": "sam3"}
    out = []
    for trunk in trunks:
        for short, text in texts.items():
            base = PRESETS[text]
            out.append(replace(base, name=f"efficientsam3-{trunk}-{short}", image_trunk=trunk,
                               description=f"EfficientSAM3 {trunk} image trunk + {base.description}"))
    for name, trunk, upstream in (("ev-m", "ev-b1", "EfficientViT b1"), ("rv-m", "rv-m1.1", "RepViT m1.1"),
                                  ("tv-m", "tv-11m", "TinyViT 11m")):
        out.append(replace(PRESETS["litetext-s0"], name=f"efficientsam3-{name}", image_trunk=trunk,
                           description=f"EfficientSAM3 {name.upper()}: {upstream} + MobileCLIP-S0 (ctx 16)"))
    return out


PRESETS.update({p.name: p for p in _efficientsam3_presets()})


def get_preset(name: str) -> Preset:
    from litetext.errors import LitetextError

    if name not in PRESETS:
        raise LitetextError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def build_config(preset: Preset, context_length: int, overrides: dict[str, Any] | None = None):
    """The transformers config of a preset at a context length. `overrides` replaces sub-configs (tests use
    it to build tiny versions of the same architectures)."""
    from transformers import Sam3Config, Sam3LiteTextConfig

    overrides = dict(overrides or {})
    text = {**preset.text_config, **overrides.pop("text_config", {})}
    if preset.family == STUDENT:
        text.setdefault("max_position_embeddings", context_length)
        return Sam3LiteTextConfig(text_config=text, **overrides)
    return Sam3Config(text_config=text or None, **overrides)

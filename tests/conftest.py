"""Shared fixtures: tiny versions of the real architectures (built in milliseconds) and the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tiny sub-configs of the real SAM3 / SAM3-LiteText architectures: same code paths, few parameters.
TINY_IMAGE_SIZE = 112  # 8 x 8 patches of 14 px -> FPN levels 32, 16, 8
TINY_HEADS = dict(
    vision_config=dict(
        model_type="sam3_vision_model",
        backbone_config=dict(
            model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=TINY_IMAGE_SIZE, patch_size=14, window_size=4,
            global_attn_indexes=[1], pretrain_image_size=56,
        ),
        fpn_hidden_size=32,
        backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
    ),
    geometry_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
    detr_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
    detr_decoder_config=dict(hidden_size=32, num_layers=2, num_attention_heads=2, intermediate_size=64, num_queries=12),
    mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
)
TINY_TEXT = {
    "litetext-s0": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                        projection_dim=32),
    "litetext-s1": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        projection_dim=32),
    "sam3": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 projection_dim=32, max_position_embeddings=32),
}


def tiny_overrides(preset: str) -> dict:
    return {**TINY_HEADS, "text_config": dict(TINY_TEXT[preset])}


def shared_data() -> Path:
    return Path(os.environ.get("LITETEXT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_data()
    if not (path / "prompts").is_dir():
        pytest.skip(f"shared data not found at {path} (set LITETEXT_SHARED_DATA)")
    return path


def tiny_model(preset: str = "litetext-s0", seed: int = 0, context_length: int | None = None, init: str = "stress"):
    """Seeded random weights; the stress initialisation (litetext.models.stress_init) makes every layer matter,
    so a conversion that breaks one fails parity."""
    from litetext.models.loading import load_model

    return load_model(preset, random_init=True, seed=seed, context_length=context_length,
                      config_overrides=tiny_overrides(preset), init=init)


@pytest.fixture(scope="session")
def tiny_s0():
    return tiny_model("litetext-s0")


@pytest.fixture(scope="session")
def tiny_teacher():
    return tiny_model("sam3")


def builtin_image():
    from litetext.calibration.data import builtin_asset

    return builtin_asset("chelsea.png")


@pytest.fixture(scope="session")
def fixture_model():
    """The trained fixture (fixtures/shapes-s0): real instances on rendered scenes (litetext.fixture.scenes)."""
    from litetext.fixture.model import fixture_path, load_fixture

    if not (fixture_path() / "config.json").is_file():
        pytest.skip(f"fixture model not found at {fixture_path()}")
    return load_fixture()

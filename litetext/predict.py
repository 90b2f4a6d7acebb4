"""Text-prompted segmentation from an exported bundle, with pre- and post-processing in numpy only, as an
app would port them: prompt + image -> instances (score, box, mask)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from litetext.calibration.data import load_rgb, preprocess_image
from litetext.calibration.images import PREDICT_MAX_SIDE
from litetext.errors import LitetextError
from litetext.bundle import Bundle
from litetext.models.heads_semantics import heads_attention_mask, semantics_of_manifest
from litetext.postprocess import Instance, postprocess

NEEDED_GRAPHS = ("text_encoder", "vision_encoder", "heads")
# Prompts per heads call unless asked otherwise. At 1008 px every prompt in a call adds about 1.2 GiB to the
# heads' working memory in ONNX Runtime (EfficientSAM3 EV-M heads, fp32: 1.6 GiB peak at 1 prompt, 2.8 GiB at 2),
# and batching bought no speed on a CPU (2.9 s against 5.5 s), so eight prompts in one call ran a 24 GiB machine
# out of memory in INT8 while eight calls of one need no more than one.
HEADS_BATCH = 1


def heads_batch_for(target: str, requested: int | None = None) -> int:
    """Prompts per heads call for a bundle of `target`: `requested` (default HEADS_BATCH), but always one for
    Core ML, whose heads take a fixed batch."""
    batch = HEADS_BATCH if requested is None else int(requested)
    if batch < 1:
        raise LitetextError(f"the heads' batch must be a positive number of prompts, not {requested}")
    return 1 if target == "coreml" else batch


@dataclass
class ImageFeatures:
    """One image through the vision encoder: its FPN levels (batch 1) and its size in pixels."""

    levels: dict[str, np.ndarray]
    height: int
    width: int


class Predictor:
    """Runs a bundle's three graphs: tokenizer -> text encoder, image -> vision encoder, both -> heads."""

    def __init__(self, bundle: Bundle | str | Path, heads_batch: int | None = None):
        from litetext.vocabulary.stored import KIND, FixedVocabulary, text_path_of

        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        text_path = text_path_of(self.bundle.manifest)
        # A fixed-vocabulary bundle stores text features for its prompts instead of a text encoder.
        self.vocabulary = FixedVocabulary.load(self.bundle.path, text_path) if text_path["kind"] == KIND else None
        needed = [g for g in NEEDED_GRAPHS if not (g == "text_encoder" and self.vocabulary is not None)]
        missing = [g for g in needed if g not in self.bundle.graphs]
        if missing:
            raise LitetextError(
                f"{self.bundle.path} lacks graphs {missing} needed to predict; export them with litetext export "
                f"--graphs {','.join(NEEDED_GRAPHS)} (the default: every graph)"
            )
        self.runners = {g: self.bundle.runner(g) for g in needed}
        self.tokenizer = self.bundle.tokenizer()
        self.image_size = int(self.bundle.manifest["preprocess"]["image_size"])
        self.heads_batch = heads_batch_for(self.bundle.manifest["target"], heads_batch)
        self._text_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # prompt -> (features [L, W], mask [L])

    def __call__(self, rgb: np.ndarray, prompt: str, threshold: float = 0.5) -> list[Instance]:
        return self.predict_prompts(rgb, [prompt], threshold)[prompt]

    def encode_image(self, rgb: np.ndarray) -> ImageFeatures:
        """The vision encoder's levels for one image: keep them to ask it other prompts (predict_prompts)."""
        levels = self.runners["vision_encoder"].infer({"pixel_values": preprocess_image(rgb, self.image_size)})
        return ImageFeatures(levels, int(rgb.shape[0]), int(rgb.shape[1]))

    def encode_prompts(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(text_features [P, L, W], attention_mask [P, L]) of prompts, each through the text encoder (or the
        fixed vocabulary) once for the life of this Predictor."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if new:
            padding = self.bundle.text_padding
            tokens = self.tokenizer(new, context_length=self.bundle.context_length, pad_id=padding.pad_id)
            if self.vocabulary is not None:  # LitetextError for a prompt not in the list
                looked_up = [self.vocabulary.lookup(prompt) for prompt in new]
                features = np.concatenate([f for f, _ in looked_up])
                masks = np.concatenate([m for _, m in looked_up])
            else:
                masks = tokens.attention_mask
                features = self.runners["text_encoder"].infer(
                    {"input_ids": tokens.input_ids, "attention_mask": masks})["text_features"]
            # The heads' mask follows the bundle's heads semantics (upstream: ids that are 0 are not attended to).
            masks = heads_attention_mask(tokens.input_ids, masks, semantics_of_manifest(self.bundle.manifest))
            for i, prompt in enumerate(new):
                self._text_cache[prompt] = (features[i], masks[i])
        rows = [self._text_cache[p] for p in prompts]
        return np.stack([f for f, _ in rows]), np.stack([m for _, m in rows])

    def predict_prompts(self, image: np.ndarray | ImageFeatures, prompts: list[str],
                        threshold: float = 0.5) -> dict[str, list[Instance]]:
        """Instances of each prompt in one image (an RGB array, or its encode_image features): the image's
        features go to the heads with `heads_batch` prompts per call."""
        features = image if isinstance(image, ImageFeatures) else self.encode_image(image)
        prompts = list(dict.fromkeys(prompts))
        text, mask = self.encode_prompts(prompts)
        step = self.heads_batch
        found: dict[str, list[Instance]] = {}
        for start in range(0, len(prompts), step):
            rows = slice(start, start + step)
            count = len(prompts[rows])
            levels = {k: np.repeat(v, count, axis=0) for k, v in features.levels.items()}
            outputs = self.runners["heads"].infer(
                {**levels, "text_features": text[rows], "attention_mask": mask[rows]})
            for i, prompt in enumerate(prompts[rows]):
                one = {k: v[i : i + 1] for k, v in outputs.items()}
                found[prompt] = postprocess(one, features.height, features.width, threshold)
        return found


def predict(bundle: Bundle | str | Path, image: str | Path, prompt: str, threshold: float = 0.5) -> list[Instance]:
    return Predictor(bundle)(load_rgb(image, max_side=PREDICT_MAX_SIDE), prompt, threshold)


class _CallableModule(types.ModuleType):
    """Importing this module binds it to the name `litetext.predict`, hiding the package's lazy `predict`
    function; calling the module calls the function, so `litetext.predict(bundle, image, prompt)` always works."""

    def __call__(self, *args, **kwargs) -> list[Instance]:
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

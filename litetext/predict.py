"""Text-prompted segmentation from an exported bundle, with pre- and post-processing in numpy only, as an
app would port them: prompt + image -> instances (score, box, mask)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from litetext.calibration.data import load_rgb, preprocess_image
from litetext.errors import LitetextError
from litetext.export.bundle import Bundle, write_json_atomic

NEEDED_GRAPHS = ("text_encoder", "vision_encoder", "heads")


@dataclass
class Instance:
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    mask: np.ndarray  # bool [H, W]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of the last two axes, as torch's interpolate(mode="bilinear", align_corners=False)
    without antialiasing: sample at (i + 0.5) * in/out - 0.5, clamped at the low edge."""

    def weights(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(np.float32)

    r0, r1, wr = weights(x.shape[-2], height)
    c0, c1, wc = weights(x.shape[-1], width)
    rows = x[..., r0, :] * (1 - wr)[:, None] + x[..., r1, :] * wr[:, None]
    return rows[..., c0] * (1 - wc) + rows[..., c1] * wc


def query_scores(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Each query's score for one image (batch 1): sigmoid(pred_logits) x sigmoid(presence_logits)."""
    return sigmoid(outputs["pred_logits"][0]) * sigmoid(outputs["presence_logits"][0, 0])


def postprocess(outputs: dict[str, np.ndarray], image_height: int, image_width: int,
                threshold: float = 0.5, mask_threshold: float = 0.5) -> list[Instance]:
    """Heads outputs for one image (batch 1) -> instances above `threshold`, best first."""
    scores = query_scores(outputs)
    keep = np.flatnonzero(scores > threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    scale = np.array([image_width, image_height, image_width, image_height], dtype=np.float32)
    boxes = outputs["pred_boxes"][0, keep] * scale
    masks = resize_bilinear(sigmoid(outputs["pred_masks"][0, keep]), image_height, image_width) > mask_threshold
    return [Instance(float(scores[i]), tuple(map(float, b)), m) for i, b, m in zip(keep, boxes, masks)]


@dataclass
class ImageFeatures:
    """One image through the vision encoder: its FPN levels (batch 1) and its size in pixels."""

    levels: dict[str, np.ndarray]
    height: int
    width: int


class Predictor:
    """Runs a bundle's three graphs: tokenizer -> text encoder, image -> vision encoder, both -> heads."""

    def __init__(self, bundle: Bundle | str | Path):
        from litetext.vocabulary import KIND, FixedVocabulary, text_path_of

        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        text_path = text_path_of(self.bundle.manifest)
        # A fixed-vocabulary bundle stores text features for its prompts instead of a text encoder.
        self.vocabulary = FixedVocabulary.load(self.bundle.path, text_path) if text_path["kind"] == KIND else None
        needed = [g for g in NEEDED_GRAPHS if not (g == "text_encoder" and self.vocabulary is not None)]
        missing = [g for g in needed if g not in self.bundle.graphs]
        if missing:
            raise LitetextError(
                f"{self.bundle.path} lacks graphs {missing} needed to predict; export with --graphs "
                f"{' '.join(NEEDED_GRAPHS)}"
            )
        self.runners = {g: self.bundle.runner(g) for g in needed}
        self.tokenizer = self.bundle.tokenizer()
        self.image_size = int(self.bundle.manifest["preprocess"]["image_size"])
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
        if new and self.vocabulary is not None:
            for prompt in new:  # LitetextError for a prompt not in the list
                features, mask = self.vocabulary.lookup(prompt)
                self._text_cache[prompt] = (features[0], mask[0])
        elif new:
            padding = self.bundle.text_padding
            tokens = self.tokenizer(new, context_length=self.bundle.context_length, pad_id=padding.pad_id)
            features = self.runners["text_encoder"].infer(
                {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask})["text_features"]
            for i, prompt in enumerate(new):
                self._text_cache[prompt] = (features[i], tokens.attention_mask[i])
        rows = [self._text_cache[p] for p in prompts]
        return np.stack([f for f, _ in rows]), np.stack([m for _, m in rows])

    def predict_prompts(self, image: np.ndarray | ImageFeatures, prompts: list[str],
                        threshold: float = 0.5) -> dict[str, list[Instance]]:
        """Instances of each prompt in one image (an RGB array, or its encode_image features): the heads run on
        the prompts as one batch (one at a time for Core ML, whose heads take a fixed batch)."""
        features = image if isinstance(image, ImageFeatures) else self.encode_image(image)
        prompts = list(dict.fromkeys(prompts))
        text, mask = self.encode_prompts(prompts)
        step = 1 if self.bundle.manifest["target"] == "coreml" else max(len(prompts), 1)
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
    return Predictor(bundle)(load_rgb(image), prompt, threshold)


def write_prediction(instances: list[Instance], image: str | Path, prompt: str, out: str | Path,
                     weights_label: str = "") -> Path:
    """instances.json (score, box, mask file and area) + one PNG mask per instance + overlay.png."""
    from PIL import Image, ImageDraw

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rgb = load_rgb(image)
    overlay = rgb.astype(np.float32)
    palette = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230]], dtype=np.float32)
    records = []
    for i, inst in enumerate(instances):
        name = f"mask_{i:03d}.png"
        Image.fromarray(inst.mask.astype(np.uint8) * 255).save(out / name)
        color = palette[i % len(palette)]
        overlay[inst.mask] = 0.5 * overlay[inst.mask] + 0.5 * color
        records.append({"score": round(inst.score, 6), "box_xyxy": [round(v, 2) for v in inst.box],
                        "mask": name, "mask_area": int(inst.mask.sum())})
    picture = Image.fromarray(overlay.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for i, inst in enumerate(instances):
        draw.rectangle(inst.box, outline=tuple(int(c) for c in palette[i % len(palette)]), width=2)
        draw.text((inst.box[0] + 3, inst.box[1] + 2), f"{prompt} {inst.score:.2f}", fill=(255, 255, 255))
    picture.save(out / "overlay.png")
    write_json_atomic(out / "instances.json", {
        "image": str(image), "prompt": prompt, "weights": weights_label,
        "image_size": [int(rgb.shape[1]), int(rgb.shape[0])], "instances": records,
    })
    return out

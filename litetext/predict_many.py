"""Many images x many prompts with one bundle, as apps run it: each image through the vision encoder once, each
prompt through the text encoder once (litetext.predict.Predictor caches both), the heads batched over the
prompts of an image. Output: one folder per image with instances.json (instances per prompt), one PNG mask per
instance and overlay.png (every prompt's instances, labelled)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from litetext.calibration.data import load_rgb
from litetext.calibration.images import PREDICT_MAX_SIDE
from litetext.files import write_json_atomic
from litetext.files import write_atomic
from litetext.predict import Instance, Predictor

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128]], dtype=np.float32)
MIN_OVERLAY_SIDE = 512  # small images are enlarged (nearest) so that labels stay readable


def predict_images(predictor: Predictor, images: list[Path], prompts: list[str],
                   threshold: float = 0.5) -> Iterator[tuple[Path, np.ndarray, dict[str, list[Instance]]]]:
    """(image path, RGB, {prompt: instances}) for each image, in order."""
    for path in images:
        rgb = load_rgb(path, max_side=PREDICT_MAX_SIDE)
        yield path, rgb, predictor.predict_prompts(rgb, prompts, threshold)


def is_prediction_folder(folder: Path) -> bool:
    """A folder `litetext predict` wrote (one sub-folder per image, each with its instances.json)."""
    return any((sub / "instances.json").is_file() for sub in folder.iterdir() if sub.is_dir())


def image_folders(images: list[Path]) -> list[str]:
    """One output folder name per image: its file stem, numbered where stems repeat."""
    stems = [p.stem for p in images]
    return [s if stems.count(s) == 1 else f"{s}-{i}" for i, s in enumerate(stems)]


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    write_atomic(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def overlay(rgb: np.ndarray, found: dict[str, list[Instance]], title: str = "") -> np.ndarray:
    """RGB with each prompt's masks tinted in its colour, boxes drawn and labelled "prompt score" on a dark band;
    enlarged (nearest) to at least MIN_OVERLAY_SIDE pixels on the short side."""
    from PIL import Image, ImageDraw, ImageFont

    picture = rgb.astype(np.float32)
    for j, instances in enumerate(found.values()):
        color = PALETTE[j % len(PALETTE)]
        for inst in instances:
            picture[inst.mask] = 0.45 * picture[inst.mask] + 0.55 * color
    scale = max(1, int(np.ceil(MIN_OVERLAY_SIDE / min(rgb.shape[:2]))))
    image = Image.fromarray(picture.clip(0, 255).astype(np.uint8))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    for j, (prompt, instances) in enumerate(found.items()):
        color = tuple(int(c) for c in PALETTE[j % len(PALETTE)])
        for inst in instances:
            x0, y0, x1, y1 = (v * scale for v in inst.box)
            draw.rectangle((x0, y0, x1, y1), outline=color, width=2)
            label = f"{prompt} {inst.score:.2f}"
            left, top, right, bottom = draw.textbbox((x0 + 2, y0 + 2), label, font=font)
            draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
            draw.text((x0 + 2, y0 + 2), label, fill=color, font=font)
    # legend: every prompt with its colour and count, top left
    lines = [title] if title else []
    lines += [f"{prompt}: {len(instances)}" for prompt, instances in found.items()]
    y = 4
    for k, line in enumerate(lines):
        color = (255, 255, 255) if title and k == 0 else \
            tuple(int(c) for c in PALETTE[(k - bool(title)) % len(PALETTE)])
        left, top, right, bottom = draw.textbbox((6, y), line, font=font)
        draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0))
        draw.text((6, y), line, fill=color, font=font)
        y = bottom + 5
    return np.asarray(image)


def write_image_predictions(found: dict[str, list[Instance]], image: str | Path, rgb: np.ndarray, out: str | Path,
                            weights_label: str = "", threshold: float = 0.5) -> Path:
    """OUT/instances.json ({prompt: [score, box, mask file, area]}), OUT/p{J}_{I}.png masks, OUT/overlay.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = {}
    for j, (prompt, instances) in enumerate(found.items()):
        rows = []
        for i, inst in enumerate(instances):
            name = f"p{j:02d}_{i:03d}.png"
            _save_png(out / name, inst.mask.astype(np.uint8) * 255)
            rows.append({"score": round(inst.score, 6), "box_xyxy": [round(v, 2) for v in inst.box],
                         "mask": name, "mask_area": int(inst.mask.sum())})
        records[prompt] = rows
    _save_png(out / "overlay.png", overlay(rgb, found))
    write_json_atomic(out / "instances.json", {
        "image": str(image), "weights": weights_label, "threshold": threshold,
        "image_size": [int(rgb.shape[1]), int(rgb.shape[0])], "prompts": records,
    })
    return out

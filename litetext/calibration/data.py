"""Real inputs: prompt files and images, read the way users have them, and turned into graph feeds.

The package ships a small tier-A default (the 80 COCO names, two photos) so that an export checks itself on
real data with nothing downloaded; users pass their own prompts and images for anything that matters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from litetext.errors import LitetextError
from litetext.files import builtin_asset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def builtin_prompts() -> list[str]:
    return read_prompts([builtin_asset("prompts_coco_80_names.txt")])


def builtin_calibration_prompts() -> list[str]:
    return read_prompts([builtin_asset("prompts_calibration.txt")])


def seeded_sample(prompts: list[str], count: int, seed: int = 0) -> list[str]:
    """`count` prompts drawn uniformly without replacement (seeded), in their original order: how the
    benchmarks pick held-out prompts, so every script measures on the same ones."""
    rng = np.random.default_rng(seed)
    return [prompts[i] for i in sorted(rng.choice(len(prompts), min(count, len(prompts)), replace=False))]


def sample_by_length(prompts: list[str], lengths: list[int], count: int, seed: int = 0) -> list[str]:
    """Up to `count` prompts, drawn evenly across token lengths (seeded), so that rare long referring
    expressions are represented rather than drowned by short category names."""
    if len(prompts) <= count:
        return list(prompts)
    rng = np.random.default_rng(seed)
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        buckets.setdefault(n, []).append(i)
    queues = [list(rng.permutation(ids)) for _, ids in sorted(buckets.items())]
    chosen: list[int] = []
    while len(chosen) < count:  # round robin over lengths until the count is reached
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop()))
    return [prompts[i] for i in sorted(chosen)]


def builtin_images() -> list[Path]:
    return [builtin_asset("chelsea.png"), builtin_asset("rocket.jpg")]


PROMPT_SUFFIXES = (".txt", ".json")


def read_prompts(paths: list[str | Path]) -> list[str]:
    """Prompts from files and folders of them, in order, duplicates removed. Formats:
    - .txt: one prompt a line;
    - .json: COCO / LVIS categories (`categories[].name` and `synonyms`), RefCOCO-style referring expressions
      (`sentences[].raw`, else `.sent`), SA-Co noun phrases (`noun_phrase`, `text_input`), found at any depth.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(q for q in p.iterdir() if q.suffix in PROMPT_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            raise LitetextError(f"prompt file {p} does not exist")
    if not files:
        raise LitetextError(f"no prompt files (.txt, .json) in {', '.join(map(str, paths))}")
    prompts: dict[str, None] = {}
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise LitetextError(f"prompt file {f} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        found = _json_prompts(f, text) if f.suffix == ".json" else text.splitlines()
        for line in found:
            if line.strip():
                prompts[" ".join(line.split())] = None
    if not prompts:
        raise LitetextError(f"prompt files {', '.join(map(str, files))} hold no prompts")
    return list(prompts)


def _json_prompts(path: Path, text: str) -> list[str]:
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LitetextError(f"prompt file {path} is not valid JSON: {e}") from None
    found: list[str] = []

    def walk(node, parent_key: str = "") -> None:
        if isinstance(node, dict):
            if parent_key == "categories" and isinstance(node.get("name"), str):
                found.append(node["name"].replace("_", " "))
                found.extend(s.replace("_", " ") for s in node.get("synonyms", []) if isinstance(s, str))
            if parent_key == "sentences" and isinstance(node.get("raw", node.get("sent")), str):
                found.append(node.get("raw", node.get("sent")))
            for key in ("noun_phrase", "text_input"):
                if isinstance(node.get(key), str):
                    found.append(node[key])
            for key, value in node.items():
                walk(value, key)
        elif isinstance(node, list):
            for item in node:
                walk(item, parent_key)

    walk(data)
    if not found:
        raise LitetextError(
            f"{path} holds no prompts litetext recognises (categories[].name, sentences[].raw/sent, "
            "noun_phrase, text_input)"
        )
    return found


def read_images(paths: list[str | Path]) -> list[Path]:
    """Image files, and the images inside folders, in order."""
    images: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            images.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            images.append(p)
        else:
            raise LitetextError(f"image {p} does not exist")
    if not images:
        raise LitetextError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return images


def load_rgb(path: str | Path, max_pixels: int | None = None, max_side: int | None = None) -> np.ndarray:
    """An image as uint8 RGB [H, W, 3], read under a pixel limit, every mode converted by its meaning, reduced
    to `max_side` when given (litetext.calibration.images.read_rgb)."""
    from litetext.calibration.images import read_rgb

    return read_rgb(path, max_pixels, max_side)


def preprocess_image(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> pixel_values float32 [1, 3, S, S]: upstream's antialiased bilinear resize to S x S
    (aspect not kept, as SAM3's processor), scale to 0..1, normalize with mean 0.5 and std 0.5
    (litetext.image_resize)."""
    from litetext.image_resize import pixel_values

    return pixel_values(rgb, image_size)

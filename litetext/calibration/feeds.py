"""Real inputs for each graph at a batch size: prompts through the tokenizer, images through preprocessing. The
one builder of feeds for parity (export), calibration of the image graphs, and benchmarks.

With `wrap` (benchmarks), every feed of a batch size has exactly that batch (prompts and images are taken in order
and wrap around), so timed runs all see the same shapes; without it (parity), each prompt is fed once. Text feeds carry their prompts too ("prompts", for fixed-vocabulary
lookups; runners read only their inputs). The heads get the FPN levels of one image (repeated) and the text
features of `batch` prompts, computed by the given text and vision runners.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class GraphFeeds:
    feeds: list[dict[str, np.ndarray]]
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # heads: (height, width) of each feed's image
    # A pruned text encoder's feeds hold its tokenizer's ids; the reference takes CLIP's ids of the same prompts,
    # and `covered` (one per row, all feeds in order) says which prompts have every token kept.
    reference_feeds: list[dict[str, np.ndarray]] | None = None
    covered: np.ndarray | None = None


class RealInputs:
    """Prompts and images, tokenized and preprocessed once per context length and image size. `tokens` (ids,
    mask) stands in for tokenizing: a calibration set's ids, already made."""

    def __init__(self, prompts: list[str], images: list[str | Path],
                 tokens: tuple[np.ndarray, np.ndarray] | None = None):
        self.prompts = list(prompts)
        self.images = [Path(p) for p in images]
        self.given_tokens = tokens
        self._tokens: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._rgb: list[np.ndarray] | None = None
        self._pixels: dict[int, list[np.ndarray]] = {}

    def describe(self) -> dict:
        return {"prompts": len(self.prompts), "images": [p.name for p in self.images]}

    def tokens(self, context_length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        if self.given_tokens is not None:
            return self.given_tokens
        key = (context_length, pad_id)
        if key not in self._tokens:
            import warnings

            from litetext.tokenizer import ClipTokenizer

            with warnings.catch_warnings():  # long prompts are cut; the benchmark measures what runs
                warnings.simplefilter("ignore")
                batch = ClipTokenizer()(self.prompts, context_length=context_length, pad_id=pad_id)
            self._tokens[key] = (batch.input_ids, batch.attention_mask)
        return self._tokens[key]

    def text(self, context_length: int, padding, batch: int, tokenizer=None, wrap: bool = True) -> GraphFeeds:
        """Text feeds; with `tokenizer` (a pruned text encoder's PrunedTokenizer) its ids, beside the
        reference's."""
        ids, mask = self.tokens(context_length, padding.pad_id)
        prompts = np.array(self.prompts)
        n = len(ids)
        rows = [[(start + j) % n for j in range(batch if wrap else min(batch, n - start))] for start in range(0, n, batch)]
        out = [{"input_ids": ids[r], "attention_mask": mask[r], "prompts": prompts[r]} for r in rows]
        if tokenizer is None:
            return GraphFeeds(out)
        import warnings

        with warnings.catch_warnings():  # long prompts are cut; the benchmark measures what runs
            warnings.simplefilter("ignore")
            _, new, covered = tokenizer.compare(self.prompts, context_length, padding.pad_id)
        pruned = [{"input_ids": new.input_ids[r], "attention_mask": new.attention_mask[r], "prompts": prompts[r]}
                  for r in rows]
        return GraphFeeds(pruned, reference_feeds=out, covered=np.concatenate([covered[r] for r in rows]))

    def rgb(self) -> list[np.ndarray]:
        if self._rgb is None:
            from litetext.calibration.data import load_rgb

            self._rgb = [load_rgb(p) for p in self.images]
        return self._rgb

    def pixels(self, image_size: int) -> list[np.ndarray]:
        if image_size not in self._pixels:
            from litetext.calibration.data import preprocess_image

            self._pixels[image_size] = [preprocess_image(rgb, image_size) for rgb in self.rgb()]
        return self._pixels[image_size]

    def vision(self, image_size: int, batch: int) -> GraphFeeds:
        pixels = self.pixels(image_size)
        n = len(pixels)
        out = []
        for start in range(0, n, batch):
            out.append({"pixel_values": np.concatenate([pixels[(start + j) % n] for j in range(batch)])})
        return GraphFeeds(out)

    def heads(self, context_length: int, padding, image_size: int, batch: int, text_runner, vision_runner,
              semantics=None) -> GraphFeeds:
        """One feed per image: its FPN levels repeated `batch` times, with `batch` prompts. The heads' mask
        follows `semantics` (litetext.models.heads_semantics; upstream: ids that are 0 are not attended to)."""
        from litetext.models.heads_semantics import heads_attention_mask

        ids, mask = self.tokens(context_length, padding.pad_id)
        n = len(ids)
        out, sizes = [], []
        for i, (pixels, rgb) in enumerate(zip(self.pixels(image_size), self.rgb())):
            rows = [(i * batch + j) % n for j in range(batch)]
            text = text_runner.infer({"input_ids": ids[rows], "attention_mask": mask[rows]})["text_features"]
            levels = vision_runner.infer({"pixel_values": pixels})
            heads_mask = mask[rows] if semantics is None else heads_attention_mask(ids[rows], mask[rows], semantics)
            out.append({**{k: np.repeat(v, batch, axis=0) for k, v in levels.items()},
                        "text_features": text, "attention_mask": heads_mask})
            sizes.append((int(rgb.shape[0]), int(rgb.shape[1])))
        return GraphFeeds(out, sizes)


def graph_parity(graph: str, wants: list[dict[str, np.ndarray]], gots: list[dict[str, np.ndarray]],
                 graph_feeds: GraphFeeds, threshold: float = 0.5) -> dict[str, dict]:
    """{"outputs": tensor parity per output} and, for the heads, {"instances": what an app would see at
    `threshold`}: the layout of manifests and benchmark records."""
    from litetext.calibration.parity import instance_agreement, output_parity

    figures: dict[str, dict] = {"outputs": output_parity(wants, gots, graph_feeds.feeds)}
    if graph == "heads":
        figures["instances"] = instance_agreement(wants, gots, graph_feeds.image_sizes, threshold)
    return figures

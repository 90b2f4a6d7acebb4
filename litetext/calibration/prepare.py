"""The calibration an export uses: feeds from a saved calibration set or from prompts drawn evenly across token
lengths, and for the image graphs feeds made from real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from litetext.calibration.feeds import RealInputs
from litetext.calibration.int8 import Int8Calibration


def int8_calibration(ctx, padding, calib_prompts, calib_set, method, tokenizer=None) -> Int8Calibration:
    """Calibration feeds from a saved set, or from prompts drawn evenly across token lengths (seed 0). A pruned
    text encoder takes other ids: `tokenizer` (its PrunedTokenizer) tokenizes the set's prompts again."""
    import warnings

    from litetext.calibration.data import builtin_calibration_prompts
    from litetext.calibration.sets import BATCH, build_calibration_set, check_fits

    if calib_set is None:
        calib_set = build_calibration_set(calib_prompts or builtin_calibration_prompts(), ctx, padding.pad_id)
    check_fits(calib_set, ctx, padding.pad_id)
    feeds, report = calib_set.text_feeds(), {"calibration_set": calib_set.summary()}
    if tokenizer is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # long calibration prompts are cut on purpose: they fill the context
            tokens = tokenizer(calib_set.prompts, ctx, padding.pad_id)
        feeds = tokens.feeds(BATCH)
        report["token_ids"] = "the set's prompts tokenized with the pruned tokenizer.json (NEW ids)"
    return Int8Calibration(feeds, method, prompts=len(calib_set.prompts), report=report, images=calib_set.images)


def image_calibration_feeds(name, loaded, ctx, padding, calibration: Int8Calibration, calib_images,
                            image_size: int) -> list[dict[str, np.ndarray]]:
    """Calibration feeds from real images (the calibration set's, else `calib_images`, else the built-in photos),
    one per batch: the calibrator holds a batch's tensors, gigabytes at 1008 px. The vision encoder takes the
    images; the heads take them through the PyTorch vision encoder, each with two calibration prompts through
    the PyTorch text encoder."""
    from litetext.calibration.data import builtin_images, read_images
    from litetext.models.graphs import build_graph, describe_graphs
    from litetext.models.heads_semantics import heads_semantics_of
    from litetext.runtimes.torch_runner import TorchRunner

    recorded = [_checked_image(i) for i in calibration.images]
    images = recorded or (read_images(calib_images) if calib_images else builtin_images())
    ids = np.concatenate([f["input_ids"] for f in calibration.feeds])
    mask = np.concatenate([f["attention_mask"] for f in calibration.feeds])
    inputs = RealInputs([], images, tokens=(ids, mask))
    calibration.report["calibration_images"] = [Path(p).name for p in images]
    calibration.ranking_feeds = 2  # the mixed-precision search ranks layers on two images (heads: one, two prompts)
    if name == "vision_encoder":
        batches = inputs.vision(image_size, 1).feeds
    else:
        specs = describe_graphs(loaded, ctx, padding)
        text, vision = (TorchRunner(build_graph(g, loaded, ctx, padding), specs[g])
                        for g in ("text_encoder", "vision_encoder"))
        heads = inputs.heads(ctx, padding, image_size, 2, text, vision, heads_semantics_of(loaded))
        batches = heads.feeds
        # the search keeps the instances the gate checks (each heads batch is one image)
        calibration.instance_image_sizes = [heads.image_sizes[i] for i, batch in enumerate(batches)
                                            for _ in range(len(next(iter(batch.values()))))]
    return [{k: v[i : i + 1] for k, v in batch.items()} for batch in batches
            for i in range(len(next(iter(batch.values()))))]


def _checked_image(record: dict) -> Path:
    """A calibration set's image, still the one the set recorded (its sha256)."""
    from litetext.errors import LitetextError
    from litetext.files import sha256_of

    path = Path(record["path"])
    if not path.is_file():
        raise LitetextError(f"image {path} of the calibration set is gone; make the set again with litetext calibrate")
    if sha256_of(path) != record["sha256"]:
        raise LitetextError(f"image {path} changed since the calibration set was made (sha256); make the set again")
    return path

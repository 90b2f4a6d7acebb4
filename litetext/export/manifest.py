"""manifest.json: what an export made, from what, checked how. Read back by litetext.bundle."""

from __future__ import annotations

import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from litetext.bundle import FORMAT_VERSION, TOKENIZER
from litetext.image_resize import RESIZE_DESCRIPTION
from litetext.models.heads_semantics import semantics_manifest
from litetext.models.efficientsam3 import describe_image_encoder
from litetext.models.graphs import END_ID, START_ID, model_geometry


def build_manifest(plan, graphs: dict[str, Any], text_path: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest of `plan` (litetext.export.pipeline.ExportPlan) with its graphs' entries."""
    loaded = plan.loaded
    config = loaded.model.config
    module = plan.module
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": plan.target,
        "precision": plan.precision,
        "context_length": plan.context_length,
        "text_padding": asdict(plan.padding),
        "model": {
            "preset": loaded.preset,
            "family": loaded.family,
            "model_type": config.model_type,
            "weights": loaded.weights,
            "weights_label": loaded.weights_label,
            **({} if loaded.text_only else {"image_encoder": describe_image_encoder(loaded.model)}),
            "text_encoder": {
                "hidden_size": config.text_config.hidden_size,
                "num_hidden_layers": config.text_config.num_hidden_layers,
            },
        },
        "preprocess": {
            "image_size": model_geometry(loaded).image_size,
            "resize": RESIZE_DESCRIPTION,
            "rescale": 1 / 255,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "layout": "NCHW RGB float32",
        },
        "postprocess": {
            "score": "sigmoid(pred_logits) * sigmoid(presence_logits)",
            "threshold": 0.5,
            "mask_threshold": 0.5,
            "boxes": "pred_boxes xyxy in 0..1, times image width and height",
            "masks": "sigmoid(pred_masks), bilinear (align_corners=False) to the image size",
        },
        "tokenizer": {"file": TOKENIZER, "context_length": plan.context_length, "pad_id": plan.padding.pad_id,
                      "start_id": START_ID, "end_id": END_ID, "truncation": "keep the end token"},
        "graphs": graphs,
        "parity_data": {
            "prompts": len(plan.prompts),
            "images": [Path(p).name for p in plan.images] if any(n != "text_encoder" for n in graphs) else [],
        },
        "exporter": getattr(module, "EXPORTER", {"opset": getattr(module, "OPSET", None), "torch_onnx_dynamo": False}),
        "tools": tool_versions(),
    }
    if plan.pruning is not None:  # apps read the special ids here: the pruned tokenizer's
        new = lambda old: int(plan.pruning.vocabulary.old_to_new[old])  # noqa: E731
        manifest["tokenizer"].update(pad_id=new(plan.padding.pad_id), start_id=new(START_ID), end_id=new(END_ID),
                                     vocabulary_size=len(plan.pruning.vocabulary), ids="pruned: see text_path")
    if text_path is not None:
        manifest["text_path"] = text_path
    if "heads" in graphs:
        manifest["heads_semantics"] = semantics_manifest(loaded)
    return manifest


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("litetext", "torch", "transformers", "onnx", "onnxruntime", "onnxslim", "coremltools", "tensorrt"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def format_parity(fig: dict[str, float]) -> str:
    """One output's parity figures as a person reads them."""
    return (f"max error {fig['max_abs_error']:.3g} (reference max {fig['max_abs_reference']:.3g}), cosine mean "
            f"{fig['cosine_mean']:.6f}, worst 1% {fig['cosine_worst_1pct']:.6f}, min {fig['cosine_min']:.6f}")

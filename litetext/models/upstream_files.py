"""The upstream .pt file layouts users bring, and what the file itself says about its context length.

Layouts (read from upstream's merge and stage-1 scripts, SimonZeng7108/efficientsam3):

    detector    {"model": {"detector.*": ..., "tracker.*": ...}} (or bare): a full SAM3 / LiteText detector
    + meta      the same with {"meta": {"text_context_length": N, "text_pos_embed_table_size": M}} beside
                "model" (stage-1 merge scripts; either value may be None, other meta keys are ignored)
    text only   a stage-1 text student: {"model": {"encoder.*", "projector.*"}} (TextStudentEncoder's own keys),
                possibly prefixed "module.", "backbone.language_backbone." or "detector.backbone.language_backbone."

The student's position table holds 77 rows (MobileCLIP's, sliced after loading) or one row per context
position (stage-1 files). The context length comes from `meta` when it says, else from a table whose rows are a
context length the preset supports (16 or 32); a 77-row table says nothing. A text-only file carries no vision
encoder or heads: such a model exports the text_encoder graph only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from litetext.errors import LitetextError

TEXT_PREFIX = "detector.backbone.language_backbone."
POSITION_TABLE = TEXT_PREFIX + "encoder.positional_embedding.pos_embed.pos_embed"
# Key prefixes a stage-1 text student file may carry before the student's own `encoder.` / `projector.` keys.
_TEXT_WRAPPERS = ("module.", "detector.backbone.language_backbone.", "backbone.language_backbone.")
TEXT_ONLY_GRAPHS = ("text_encoder",)
# transformers keys the text-only file fills (the rest of the model stays unloaded and unused).
TEXT_KEYS = ("text_encoder.", "text_projection.")


@dataclass
class UpstreamFile:
    state: dict[str, torch.Tensor]  # keys in the detector layout (`detector.*`)
    meta: dict[str, Any] = field(default_factory=dict)
    text_only: bool = False


def read_upstream_file(path: str | Path) -> UpstreamFile:
    """Any upstream layout above -> its state dict in the detector layout, its `meta` and whether it holds the
    text encoder only. ValueError (one line) for a file that is none of them."""
    from litetext.models.upstream import DETECTOR_PREFIX, load_payload, read_upstream_checkpoint, state_dict_of

    path = Path(path)
    payload = load_payload(path)
    meta = payload.get("meta") if isinstance(payload, Mapping) else None
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    state = state_dict_of(path, payload)
    text = _text_student_keys(state)
    if text is not None:
        return UpstreamFile({TEXT_PREFIX + k: v for k, v in text.items()}, meta, text_only=True)
    if not any(str(k).startswith(DETECTOR_PREFIX) for k in state):
        read_upstream_checkpoint(path)  # raises its own one-line error naming the top-level keys
    return UpstreamFile(state, meta, text_only=False)


def _text_student_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The student's own keys (`encoder.*`, `projector.*`) when every key is one of them after its wrappers are
    stripped, else None."""
    out = {}
    for key, value in state.items():
        name = str(key)
        for wrapper in _TEXT_WRAPPERS:
            if name.startswith(wrapper):
                name = name[len(wrapper):]
        if not name.startswith(("encoder.", "projector.")):
            return None
        out[name] = value
    return out or None


def file_context_length(path: Path, file: UpstreamFile, supported: tuple[int, ...]) -> tuple[int | None, str]:
    """(the context length the file states, where it says so) or (None, "") when it does not say."""
    rows = file.state[POSITION_TABLE].shape[2] if POSITION_TABLE in file.state else None
    table_size = file.meta.get("text_pos_embed_table_size")
    if table_size is not None and rows is not None and int(table_size) != rows:
        raise LitetextError(f"{path} is inconsistent: its meta says a text position table of {table_size} rows, "
                            f"its table holds {rows}; re-save it with the right meta")
    stated = file.meta.get("text_context_length")
    if stated is not None:
        return int(stated), f"its meta text_context_length is {int(stated)}"
    if rows is not None and rows in supported:
        return rows, f"its text position table holds {rows} rows"
    return None, ""


def resolve_context_length(path: Path, file: UpstreamFile, requested: int | None, supported: tuple[int, ...],
                           default: int) -> int:
    """The context length to load `file` at: the file's when it states one, else `requested`, else `default`.
    A request that clashes with the file is one error."""
    stated, source = file_context_length(path, file, supported)
    if stated is not None and requested is not None and requested != stated:
        raise LitetextError(f"{path} is made for context length {stated} ({source}), not --context-length "
                            f"{requested}: drop --context-length or pass {stated}")
    return requested or stated or default


def split_text_only_keys(missing: list[str]) -> tuple[list[str], list[str]]:
    """(text keys a text-only file should have filled, the rest of the model it cannot fill)."""
    text = [k for k in missing if k.startswith(TEXT_KEYS)]
    return text, [k for k in missing if not k.startswith(TEXT_KEYS)]


def available_graphs(loaded, all_graphs: tuple[str, ...]) -> tuple[str, ...]:
    """The graphs `loaded` can make: the text encoder alone for a text-only file."""
    return TEXT_ONLY_GRAPHS if loaded.weights.get("contents") == "text_encoder" else all_graphs


def check_graph_available(loaded, name: str) -> None:
    """A model loaded from a text-only file has no trained vision encoder or heads: refuse those graphs."""
    if loaded.weights.get("contents") == "text_encoder" and name not in TEXT_ONLY_GRAPHS:
        raise LitetextError(f"{loaded.weights.get('path')} holds the text encoder only (a stage-1 file): it cannot "
                            f"make the {name} graph; export with --graphs text_encoder, or use a full checkpoint")

"""Reading upstream .pt files (never unpickling code): the layouts users bring, and what the file itself says
about its context length. The key conversion is litetext.models.upstream's.

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

import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from litetext.errors import LitetextError
from litetext.models.upstream import DETECTOR_PREFIX

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


def read_upstream_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an upstream .pt checkpoint's state dict without running code from it
    (`torch.load(weights_only=True)`). Accepts `{"model": sd}`, `{"state_dict": sd}` or a bare state dict.
    Raises ValueError with a one-line message when the file is missing, truncated, not a PyTorch file,
    needs code to unpickle, or holds no `detector.` keys."""
    path = Path(path)
    state = state_dict_of(path, load_payload(path))
    if not any(isinstance(k, str) and k.startswith(DETECTOR_PREFIX) for k in state):
        prefixes = sorted({str(k).split(".", 1)[0] for k in state})
        raise ValueError(
            f"checkpoint {path} has no '{DETECTOR_PREFIX}' keys (top-level names: {', '.join(prefixes[:8]) or 'none'}); "
            "expected an upstream SAM3 / SAM3-LiteText detector checkpoint"
        )
    return dict(state)


def state_dict_of(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    """The state dict in a loaded payload: `{"model": sd}`, `{"state_dict": sd}` or a bare state dict (other
    entries beside the wrapper, such as `meta`, are not part of it). ValueError when it holds non-tensors."""
    state = obj
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                state = obj[wrapper]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"checkpoint {path} has entries that are not tensors: {', '.join(map(str, not_tensors[:5]))}")
    return dict(state)


def load_payload(path: str | Path) -> Any:
    """What an upstream .pt file holds (a dict, usually), read with `torch.load(weights_only=True)`: never runs
    code. Raises ValueError with one line when the file is missing, truncated, not a PyTorch file or needs code."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(e)
        with open(path, "rb") as f:  # torch's zip format, or a pickle (protocol 2+)
            pickled = zipfile.is_zipfile(f) or f.seek(0) == 0 and f.read(1) == b"\x80"
        if "Unsupported global" in reason or ("Weights only load failed" in str(e) and pickled):  # could run code
            raise ValueError(
                f"checkpoint {path} was refused for safety: it holds objects other than tensors and plain "
                f"containers, which could run code when unpickled ({reason.split(' In PyTorch')[0]}); litetext "
                "never runs code from a file: save the state dict of tensors alone"
            ) from None
        raise ValueError(f"checkpoint {path} is truncated or not a PyTorch file: {reason}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, IndexError, KeyError) as e:
        raise ValueError(f"checkpoint {path} is truncated or not a PyTorch file: {_first_line(e)}") from None
    return obj


def _unpickler_reason(error: BaseException) -> str:
    """The specific line of torch's multi-line weights_only error ("Unsupported global: ...",
    "Unsupported operand 110", ...)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    detail = text.split("WeightsUnpickler error:", 1)
    if len(detail) == 2:
        lines = [line.strip() for line in detail[1].splitlines() if line.strip()]
        if lines:
            return lines[0].split(" Please use ", 1)[0]  # drop torch's advice to allowlist it
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")

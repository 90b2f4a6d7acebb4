"""Load a model from a preset (seeded random weights), a transformers folder, or an upstream .pt checkpoint.

Loading never runs code from a file (safetensors, or torch.load(weights_only=True)) and never accepts
partial weights: any missing, unexpected or mis-shaped tensor fails with one line naming the keys.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litetext.errors import LitetextError
from litetext.files import sha256_of
from litetext.models.presets import STUDENT, TEACHER, Preset, build_config, get_preset

log = logging.getLogger(__name__)

# transformers model_type -> family
_FAMILY_OF_MODEL_TYPE = {"sam3": TEACHER, "sam3_lite_text": STUDENT}
# Keys a detector-only model deliberately does not load (SAM3's video tracker).
_IGNORED_KEYS = re.compile(r"^(tracker_model|tracker_neck)\.")


@dataclass
class LoadedModel:
    model: Any  # transformers Sam3Model or Sam3LiteTextModel, in eval mode
    family: str  # TEACHER or STUDENT
    weights: dict[str, Any]  # where the weights came from; goes into every manifest and result
    preset: str | None = None
    heads_semantics: str | None = None  # "upstream" or "transformers"; None: by the weights' origin
    text_only: bool = False  # built for the text encoder alone (litetext.models.text_only): no vision, no heads

    @property
    def is_random(self) -> bool:
        return self.weights["kind"] == "random"

    @property
    def weights_label(self) -> str:
        if self.is_random:
            return random_weights_label(self.weights)
        return f"checkpoint {self.weights['path']} (sha256 {self.weights['sha256'][:12]})"


def random_weights_label(weights: dict[str, Any]) -> str:
    # Records made before the stress initialisation existed carry no "init": theirs was transformers'.
    return f"RANDOM weights (seed {weights['seed']}, {weights.get('init', 'transformers')} init), not a trained model"


def model_class(family: str):
    from transformers import Sam3LiteTextModel, Sam3Model

    return Sam3LiteTextModel if family == STUDENT else Sam3Model


def load_model(
    preset: str | None = None,
    checkpoint: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    context_length: int | None = None,
    config_overrides: dict[str, Any] | None = None,
    init: str = "stress",
    graphs: list[str] | tuple[str, ...] | None = None,
) -> LoadedModel:
    """Build or load a model. Exactly one of `checkpoint` or `random_init` is required; an upstream .pt
    checkpoint also needs `preset` to name its architecture. `init` chooses the random weights: "stress"
    (litetext.models.stress_init: every layer matters) or "transformers" (the library's own initialisation).
    `graphs` names the graphs the model is for (default: all): for the text encoder alone, only it is built
    and loaded (litetext.models.text_only)."""
    text_only = graphs is not None and set(graphs) == {"text_encoder"}
    if (checkpoint is None) == (not random_init):
        raise LitetextError(
            "say where the weights come from: --checkpoint PATH, or --random-init --seed N for random weights"
        )
    if random_init:
        if preset is None:
            raise LitetextError("--random-init needs --model PRESET to name the architecture")
        from litetext.models.stress_init import STRESS, check_initialisation, stress_initialise

        spec = get_preset(preset)
        ctx = _context_length(spec, context_length)
        check_initialisation(init)
        import torch

        from litetext.models.text_only import random_text_part, use_text_part

        config = build_config(spec, ctx, config_overrides)
        if text_only:
            model = random_text_part(config, spec.family, seed)
        else:
            torch.manual_seed(seed)
            model = build_model(spec, config)
            use_text_part(model, random_text_part(model.config, spec.family, seed))  # as a text-only load's
        if init == STRESS:  # drawn per part (litetext.models.stress_init), so the text part is a text-only load's
            stress_initialise(model, seed)
        log.warning("litetext: using RANDOM weights (seed %d, %s init) for %s: outputs mean nothing", seed, init, preset)
        return LoadedModel(model.eval(), spec.family, {"kind": "random", "seed": seed, "init": init}, preset,
                           text_only=text_only)

    path = Path(checkpoint)
    if not path.exists():
        raise LitetextError(f"checkpoint {path} does not exist")
    if path.is_dir():
        return _load_transformers_folder(path, text_only)
    if preset is None:
        raise LitetextError(
            f"{path} is an upstream PyTorch checkpoint: add --model PRESET (sam3, litetext-s0, litetext-s1, "
            "litetext-l, efficientsam3-ev-m, efficientsam3-rv-m, efficientsam3-tv-m, ...) to name its architecture"
        )
    return _load_upstream_file(path, get_preset(preset), context_length, config_overrides, text_only)


def build_model(spec: Preset, config):
    """The transformers model of a preset; an EfficientSAM3 preset gets its student image trunk."""
    if spec.image_trunk is None:
        return model_class(spec.family)(config)
    from litetext.models.efficientsam3 import build_efficientsam3_model

    return build_efficientsam3_model(model_class(spec.family), config, spec.image_trunk)


def _context_length(spec: Preset, context_length: int | None) -> int:
    ctx = spec.default_context_length if context_length is None else context_length  # 0 is refused, not defaulted
    if ctx not in spec.context_lengths:
        raise LitetextError(
            f"{spec.name} supports context lengths {list(spec.context_lengths)}, not {ctx}"
        )
    return ctx


def _load_transformers_folder(path: Path, text_only: bool = False) -> LoadedModel:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise LitetextError(f"{path} is a folder without config.json: not a transformers checkpoint")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LitetextError(f"{config_file} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise LitetextError(f"{config_file} holds a JSON {type(config).__name__}, not a transformers config object")
    model_type = config.get("model_type")
    family = _FAMILY_OF_MODEL_TYPE.get(model_type)
    if family is None:
        raise LitetextError(
            f"{config_file} has model_type {model_type!r}; litetext loads "
            f"{' or '.join(map(repr, _FAMILY_OF_MODEL_TYPE))}"
        )
    if not any(path.glob("*.safetensors")):
        raise LitetextError(f"{path} holds no .safetensors weights (pickled .bin files are not loaded)")
    weights = {"kind": "checkpoint", "format": "transformers", "path": str(path), "sha256": sha256_of(path)}
    from litetext.models.heads_semantics import TRAINED_WITH_KEY, get_heads_semantics

    if TRAINED_WITH_KEY in config:  # a folder litetext trained: its heads keep the semantics it learned with
        weights["trained_heads_semantics"] = get_heads_semantics(str(config[TRAINED_WITH_KEY])).name
    if text_only:
        return LoadedModel(_text_part_of_folder(path, family), family, weights, None, text_only=True)
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its multi-line loading report: the one line below says it
    try:  # mismatched shapes are listed (then refused below) rather than raised as "look at the above report"
        model, info = model_class(family).from_pretrained(
            path, local_files_only=True, output_loading_info=True, use_safetensors=True, ignore_mismatched_sizes=True
        )
    except Exception as e:  # safetensors and transformers raise many types for broken files
        raise LitetextError(f"cannot load checkpoint {path}: {_one_line(e)}") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    unexpected = [k for k in info.get("unexpected_keys", []) if not _IGNORED_KEYS.match(k)]
    mismatched = sorted(f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in info.get("mismatched_keys", []))
    _fail_on_key_problems(path, sorted(info.get("missing_keys", [])), sorted(unexpected), mismatched)
    return LoadedModel(model.eval(), family, weights, None)


def _text_part_of_folder(path: Path, family: str):
    """The text encoder and projection of a transformers folder; the other tensors are not read."""
    from litetext.models.text_only import TextOnlyModel, key_problems, read_text_tensors

    try:
        config = model_class(family).config_class.from_pretrained(path, local_files_only=True)
        part = TextOnlyModel(config, family)
        state = read_text_tensors(path)
    except Exception as e:  # safetensors and transformers raise many types for broken files
        raise LitetextError(f"cannot load checkpoint {path}: {_one_line(e)}") from None
    _fail_on_key_problems(path, *key_problems(part, state))
    part.load_state_dict(state, strict=True)
    return part.eval()


def _load_upstream_file(
    path: Path, spec: Preset, context_length: int | None, config_overrides: dict[str, Any] | None,
    text_only: bool = False,
) -> LoadedModel:
    from litetext.models.efficientsam3 import convert_upstream
    from litetext.models.upstream import upstream_to_hf
    from litetext.models.upstream_files import read_upstream_file, resolve_context_length, split_text_only_keys

    try:
        upstream = read_upstream_file(path)
        if upstream.text_only and spec.family != STUDENT:
            raise LitetextError(f"{path} holds a LiteText student text encoder only; load it with --model "
                                "litetext-s0, litetext-s1 or litetext-l")
        ctx = context_length
        if spec.family == STUDENT:  # the file may say its context length (meta, or a table of ctx rows)
            ctx = resolve_context_length(path, upstream, ctx, spec.context_lengths, spec.default_context_length)
        ctx = _context_length(spec, ctx)
        text_only = text_only or upstream.text_only  # a stage-1 file fills the text encoder alone
        if text_only:
            from litetext.models.text_only import upstream_text_keys

            upstream.state = upstream_text_keys(upstream.state)  # the vision encoder and heads are not converted
        # Upstream keeps the first `ctx` rows of the student's 77-row position table (it does not interpolate).
        convert = convert_upstream if spec.image_trunk and not text_only else upstream_to_hf
        converted = convert(upstream.state, spec.family, context_length=ctx if spec.family == STUDENT else None)
    except ValueError as e:
        raise LitetextError(str(e)) from None
    if converted.unmapped:
        raise LitetextError(
            f"{path} has {len(converted.unmapped)} keys litetext does not know for {spec.name} "
            f"(is it the right preset?): {_some(converted.unmapped)}"
        )
    state = converted.state_dict
    overrides = dict(config_overrides or {})
    if spec.family == STUDENT:
        table = state.get("text_encoder.embeddings.position_embedding.position_embedding")
        if table is not None:
            overrides["text_config"] = {**overrides.get("text_config", {}), "max_position_embeddings": table.shape[2]}
    # Built on the CPU, not the meta device: non-persistent buffers (rotary tables, position ids) are made
    # at construction and are not in any checkpoint.
    if text_only:
        from litetext.models.text_only import TextOnlyModel

        model = TextOnlyModel(build_config(spec, ctx, overrides), spec.family)
    else:
        model = build_model(spec, build_config(spec, ctx, overrides))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if upstream.text_only:  # a stage-1 file fills the text encoder alone; the rest is never exported
        missing, _ = split_text_only_keys(missing)
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    _fail_on_key_problems(path, missing, unexpected, mismatched, hint=f"is {spec.name} the right preset?")
    model.load_state_dict(state, strict=not upstream.text_only)
    weights = {"kind": "checkpoint", "format": "upstream", "path": str(path), "sha256": sha256_of(path)}
    if upstream.text_only:
        weights["contents"] = "text_encoder"
    if upstream.meta:
        weights["meta"] = {k: v for k, v in upstream.meta.items() if isinstance(v, (int, float, str, type(None)))}
    return LoadedModel(model.eval(), spec.family, weights, spec.name, text_only=text_only)


def _fail_on_key_problems(path, missing, unexpected, mismatched, hint: str = "") -> None:
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_some(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} keys with other shapes ({_some(mismatched)})")
    if problems:
        tail = f"; {hint}" if hint else ""
        raise LitetextError(f"checkpoint {path} does not fit the model: {'; '.join(problems)}{tail}")


def _some(items, n: int = 5) -> str:
    items = [str(i) for i in items]
    more = f", ... {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"

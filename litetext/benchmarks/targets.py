"""What a benchmark runs: a TARGET gives, for each graph, a runner (the existing runner classes).

    out/s0-fp16                  an exported bundle folder (its runtime, precision, context and padding)
    torch:litetext-s0            eager PyTorch, RANDOM weights of a preset (seed from --seed)
    torch:path/to/checkpoint     eager PyTorch, a transformers checkpoint folder
    torch:litetext-s0:model.pt   eager PyTorch, an upstream .pt checkpoint of a preset

From Python, `TorchTarget.from_loaded(loaded, config_overrides=...)` wraps a model already in memory (tests
build tiny ones); the overrides let the memory probe rebuild the same model in a fresh process.
"""

from __future__ import annotations

import json
import time
from itertools import chain
from pathlib import Path
from typing import Any

from litetext.errors import LitetextError

# Bundle target -> the runtime its runner uses.
RUNTIME_OF_BUNDLE_TARGET = {"onnx": "onnxruntime"}


class Target:
    """One model in one runtime at one precision. Subclasses fill in the attributes and methods."""

    label: str
    runtime: str
    precision: str

    @property
    def graphs(self) -> list[str]:
        raise NotImplementedError

    @property
    def context_length(self) -> int:
        raise NotImplementedError

    @property
    def padding(self):
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    @property
    def heads_semantics(self):
        """How the heads' mask is built (litetext.models.heads_semantics)."""
        raise NotImplementedError

    def model_info(self) -> dict[str, Any]:
        """preset, family, weights (where from), weights_label, random."""
        raise NotImplementedError

    def open_runner(self, graph: str):
        raise NotImplementedError

    def weights_bytes(self, graph: str) -> int:
        """Static memory: bytes of the graph's weights (files on disk, or tensor bytes in memory)."""
        raise NotImplementedError

    def record_fields(self, graph: str) -> dict[str, Any]:
        """Record fields that depend on the graph (a bundle's text path); none by default."""
        return {}

    def text_tokenizer(self):
        """What tokenizes prompts for this target's text encoder when not CLIP's own ids (a pruned one)."""
        return None

    def probe_job(self, graph: str) -> dict[str, Any] | None:
        """A job for `litetext.benchmarks.probe` that loads this graph in a fresh process (None: cannot)."""
        return None

    def default_reference(self) -> "Target | None":
        """The runner to compare against when none is given (None: this target is a reference itself).
        Raises LitetextError saying why when one is needed but cannot be made."""
        return None

    def load_seconds(self) -> dict[str, float]:
        """Time spent loading the model, apart from opening runners (empty when nothing was loaded)."""
        return {}

    def release(self) -> None:
        """Free what the target holds (models, sessions)."""


class BundleTarget(Target):
    """An exported bundle folder, run by its target's runner (ONNX Runtime for onnx bundles)."""

    def __init__(self, path: str | Path, threads: int | None = None, label: str | None = None, verify: bool = False):
        from litetext.bundle import Bundle
        from litetext.vocabulary.stored import KIND, text_path_of

        self.bundle = Bundle.open(path, verify=verify)
        manifest = self.bundle.manifest
        self.label = label or str(path)
        self.runtime = RUNTIME_OF_BUNDLE_TARGET.get(manifest["target"], manifest["target"])
        self.precision = manifest["precision"]
        self.threads = threads
        self.text_path = text_path_of(manifest)
        self.fixed = self.text_path["kind"] == KIND  # a fixed vocabulary: the text "graph" is a lookup

    @property
    def graphs(self) -> list[str]:
        return ["text_encoder", *self.bundle.graphs] if self.fixed else self.bundle.graphs

    @property
    def context_length(self) -> int:
        return self.bundle.context_length

    @property
    def padding(self):
        return self.bundle.text_padding

    @property
    def image_size(self) -> int:
        return int(self.bundle.manifest["preprocess"]["image_size"])

    @property
    def heads_semantics(self):
        from litetext.models.heads_semantics import semantics_of_manifest

        return semantics_of_manifest(self.bundle.manifest)

    def model_info(self) -> dict[str, Any]:
        model = self.bundle.manifest["model"]
        return {
            "preset": model.get("preset"),
            "family": model.get("family"),
            "weights": model["weights"],
            "weights_label": model["weights_label"],
            "random": model["weights"].get("kind") == "random",
        }

    def _file(self, graph: str) -> Path:
        self.bundle.spec(graph)  # a clear error for a graph the bundle lacks
        return self.bundle.path / self.bundle.manifest["graphs"][graph]["file"]

    def open_runner(self, graph: str):
        if self.fixed and graph == "text_encoder":
            from litetext.vocabulary.stored import FixedVocabulary, LookupRunner

            return LookupRunner(FixedVocabulary.load(self.bundle.path, self.text_path))
        if self.bundle.manifest["target"] == "onnx":
            from litetext.runtimes.onnxruntime_runner import OnnxRuntimeRunner

            return OnnxRuntimeRunner(self._file(graph), self.bundle.spec(graph), self.precision, threads=self.threads)
        if self.bundle.manifest["target"] == "litert":  # --threads reaches XNNPACK too
            from litetext.runtimes.litert_runner import LiteRTRunner

            return LiteRTRunner(self._file(graph), self.bundle.spec(graph), self.precision, threads=self.threads)
        return self.bundle.runner(graph)

    def _files(self, graph: str) -> list[Path]:
        if self.fixed and graph == "text_encoder":
            return [self.bundle.path / self.text_path[k] for k in ("features_file", "prompts_file")]
        return self.bundle.files_of(graph)

    def weights_bytes(self, graph: str) -> int:
        return sum(f.stat().st_size for f in self._files(graph))

    def record_fields(self, graph: str) -> dict[str, Any]:
        """For the text encoder, the text path the device holds: its kind and files (graph + tokenizer.json, or
        the fixed vocabulary's features + list) and their bytes. A fixed vocabulary is a numpy lookup at its
        storage precision."""
        from litetext.vocabulary.stored import LookupRunner

        if graph != "text_encoder" or graph not in self.graphs:
            return {}
        files = self._files(graph)
        if not self.fixed:
            files.append(self.bundle.path / self.bundle.manifest.get("tokenizer", {}).get("file", "tokenizer.json"))
        kind = self.text_path["kind"]
        fields: dict[str, Any] = {"text_path": {
            "kind": kind, "files": [f.name for f in files], "bytes": sum(f.stat().st_size for f in files),
            **{k: self.text_path[k] for k in ("kept_tokens", "prompts", "storage") if k in self.text_path}}}
        if self.fixed:
            fields.update(runtime=LookupRunner.runtime, precision=self.text_path["storage"])
        return fields

    def text_tokenizer(self):
        from litetext.vocabulary.stored import PRUNED_KIND

        return self.bundle.tokenizer() if self.text_path["kind"] == PRUNED_KIND else None

    def probe_job(self, graph: str) -> dict[str, Any]:
        return {"kind": "bundle", "path": str(self.bundle.path.absolute()), "graph": graph, "threads": self.threads}

    def default_reference(self) -> "TorchTarget":
        """Eager PyTorch of the same weights, rebuilt from what the manifest records."""
        model = self.bundle.manifest["model"]
        weights = model["weights"]
        ctx = self.context_length
        hint = "; pass --reference TARGET"
        if weights.get("kind") == "random":
            if not model.get("preset"):
                raise LitetextError(f"{self.bundle.path}: random weights without a preset cannot be rebuilt{hint}")
            # a manifest written before the stress initialisation existed holds transformers' weights
            recipe = {"preset": model["preset"], "random_init": True, "seed": int(weights["seed"]),
                      "init": weights.get("init", "transformers"), "context_length": ctx}
        else:
            if not Path(weights["path"]).exists():
                raise LitetextError(f"{self.bundle.path} was exported from {weights['path']}, which is not here{hint}")
            if not (Path(weights["path"]).is_dir() or Path(weights["path"]).is_file()):  # a FIFO would block
                raise LitetextError(f"{self.bundle.path} names {weights['path']} as its checkpoint, which is not a "
                                    f"file or folder{hint}")
            recipe = {"checkpoint": weights["path"]}
            if weights.get("format") != "transformers":
                recipe.update(preset=model.get("preset"), context_length=ctx)
        return TorchTarget(recipe, ctx, self.padding.name, label=f"torch:{_recipe_name(recipe)} (rebuilt from manifest)",
                           expect=model)


class TorchTarget(Target):
    """Eager PyTorch fp32 of a model: a preset with seeded random weights, a checkpoint, or a model in memory.

    `recipe` holds `load_model` keyword arguments (preset, checkpoint, random_init, seed, context_length,
    config_overrides); the model is loaded on first use. `expect` (a manifest's "model") is checked against
    the loaded model when this target serves as a bundle's reference."""

    runtime = "torch"
    precision = "fp32"

    def __init__(self, recipe: dict[str, Any], context_length: int | None = None, text_padding: str = "upstream",
                 loaded=None, device: str = "cpu", label: str | None = None, expect: dict | None = None):
        from litetext.models.graphs import get_padding

        self.recipe = {k: v for k, v in recipe.items() if v is not None}
        self._padding = get_padding(text_padding)
        self._context_length = context_length or self.recipe.get("context_length")
        self._state: dict[str, Any] = {"loaded": loaded, "load_s": None}
        self._graph_modules: dict[str, Any] = {}
        self.device = device
        self.label = label or f"torch:{_recipe_name(self.recipe)}"
        self.expect = expect

    @classmethod
    def from_loaded(cls, loaded, context_length: int | None = None, text_padding: str = "upstream",
                    config_overrides: dict | None = None, label: str | None = None) -> "TorchTarget":
        """Wrap a LoadedModel; `config_overrides` (as given to load_model) let a fresh process rebuild it."""
        weights = loaded.weights
        if weights["kind"] == "random":
            recipe = {"preset": loaded.preset, "random_init": True, "seed": int(weights["seed"]),
                      "init": weights["init"]}
        else:
            recipe = {"checkpoint": weights["path"], "preset": loaded.preset}
        if loaded.family == "litetext":
            recipe["context_length"] = int(loaded.model.config.text_config.max_position_embeddings)
        if config_overrides:
            recipe["config_overrides"] = config_overrides
        return cls(recipe, context_length, text_padding, loaded=loaded, label=label)

    @classmethod
    def parse(cls, text: str, seed: int = 0, context_length: int | None = None,
              text_padding: str = "upstream") -> "TorchTarget":
        """`torch:PRESET`, `torch:CHECKPOINT_FOLDER` or `torch:PRESET:UPSTREAM.pt`."""
        from litetext.models.presets import PRESETS

        rest = text.split(":", 1)[1]
        if rest in PRESETS:
            recipe = {"preset": rest, "random_init": True, "seed": seed, "context_length": context_length}
        else:
            preset, sep, path = rest.partition(":")
            if sep and preset in PRESETS:
                recipe = {"preset": preset, "checkpoint": path, "context_length": context_length}
            else:
                path, recipe = rest, {"checkpoint": rest}
            if not Path(path).exists():
                raise LitetextError(
                    f"{text}: no checkpoint at {path}; use torch:PRESET (one of {', '.join(PRESETS)}), "
                    "torch:CHECKPOINT_FOLDER or torch:PRESET:UPSTREAM.pt"
                )
        return cls(recipe, context_length, text_padding, label=text)

    # the model ------------------------------------------------------------------------------------------

    @property
    def loaded(self):
        if self._state["loaded"] is None:
            from litetext.models.loading import load_model

            t0 = time.perf_counter()
            self._state["loaded"] = load_model(**self.recipe, graphs=self._state.get("graphs"))
            self._state["load_s"] = time.perf_counter() - t0
        return self._state["loaded"]

    def load_seconds(self) -> dict[str, float]:
        return {} if self._state["load_s"] is None else {"model": self._state["load_s"]}

    def text_only(self) -> None:
        """Load the text encoder alone (a text_encoder-only bench); the weights are the same."""
        if self._state["loaded"] is None:
            self._state["graphs"] = ["text_encoder"]

    def at(self, context_length: int, text_padding: str) -> "TorchTarget":
        """The same model (shared, not reloaded) with graphs built at another context length or padding."""
        if context_length == self.context_length and text_padding == self._padding.name:
            return self
        other = TorchTarget(self.recipe, context_length, text_padding, device=self.device, label=self.label,
                            expect=self.expect)
        other._state = self._state
        return other

    def key(self) -> str:
        """Identity of the weights and graph settings (targets with the same key give the same outputs)."""
        return json.dumps([self.recipe, self.context_length, self._padding.name, self.device], sort_keys=True,
                          default=str)

    def check_expected(self) -> None:
        """When rebuilt from a manifest, fail unless the model matches what the manifest recorded."""
        if not self.expect:
            return
        loaded = self.loaded
        text = loaded.model.config.text_config
        want = self.expect.get("text_encoder", {})
        have = {"hidden_size": text.hidden_size, "num_hidden_layers": text.num_hidden_layers}
        differ = {k: (want[k], have[k]) for k in have if k in want and want[k] != have[k]}
        if differ:
            raise LitetextError(
                f"the rebuilt reference {self.label} is not the bundle's architecture (bundle vs rebuilt: {differ}); "
                "pass --reference TARGET"
            )
        sha = self.expect["weights"].get("sha256")
        if sha and loaded.weights.get("sha256") != sha:
            raise LitetextError(f"the checkpoint at {loaded.weights['path']} changed since the export (sha256 differs)")

    # Target ---------------------------------------------------------------------------------------------

    @property
    def graphs(self) -> list[str]:
        from litetext.models.graphs import GRAPH_NAMES

        return list(GRAPH_NAMES)

    @property
    def context_length(self) -> int:
        if self._context_length:
            return int(self._context_length)
        preset = self.recipe.get("preset")
        if preset and self._state["loaded"] is None:
            from litetext.models.presets import get_preset

            return get_preset(preset).default_context_length
        loaded = self.loaded
        if loaded.family == "litetext":
            return int(loaded.model.config.text_config.max_position_embeddings)
        return 32

    @property
    def padding(self):
        return self._padding

    @property
    def image_size(self) -> int:
        from litetext.models.graphs import model_geometry

        return model_geometry(self.loaded).image_size

    @property
    def heads_semantics(self):
        from litetext.models.heads_semantics import heads_semantics_of

        return heads_semantics_of(self.loaded)

    def model_info(self) -> dict[str, Any]:
        loaded = self._state["loaded"]
        if loaded is not None:
            return {"preset": loaded.preset, "family": loaded.family, "weights": loaded.weights,
                    "weights_label": loaded.weights_label, "random": loaded.is_random}
        if self.recipe.get("random_init"):
            from litetext.models.loading import random_weights_label

            weights = {"kind": "random", "seed": self.recipe.get("seed", 0), "init": self.recipe.get("init", "stress")}
            label = random_weights_label(weights)
        else:
            weights = {"kind": "checkpoint", "path": str(self.recipe["checkpoint"])}
            label = f"checkpoint {self.recipe['checkpoint']}"
        return {"preset": self.recipe.get("preset"), "family": None, "weights": weights, "weights_label": label,
                "random": weights["kind"] == "random"}

    def graph_module(self, graph: str):
        if graph != "text_encoder" and self._state.get("graphs"):  # loaded for the text encoder alone: reload
            self._state.update(loaded=None, graphs=None)
            self._graph_modules.clear()
        if graph not in self._graph_modules:
            from litetext.models.graphs import build_graph

            self._graph_modules[graph] = build_graph(graph, self.loaded, self.context_length, self._padding)
        return self._graph_modules[graph]

    def open_runner(self, graph: str):
        from litetext.models.graphs import describe_graphs
        from litetext.runtimes.torch_runner import TorchRunner

        spec = describe_graphs(self.loaded, self.context_length, self._padding)[graph]
        return TorchRunner(self.graph_module(graph), spec, self.device)

    def weights_bytes(self, graph: str) -> int:
        """Bytes of the parameters and buffers the graph holds (shared tensors counted once). The heads graph
        wraps the whole model but runs neither its vision and text encoders nor, for text prompts, the
        geometry (box prompt) encoder, so those are left out."""
        held = _tensors(self.graph_module(graph))
        if graph == "heads":
            model = self.loaded.model
            for name in ("vision_encoder", "text_encoder", "text_projection", "geometry_encoder"):
                for ptr in _tensors(getattr(model, name)) if hasattr(model, name) else ():
                    held.pop(ptr, None)
        return sum(held.values())

    def probe_job(self, graph: str) -> dict[str, Any]:
        return {"kind": "torch", "recipe": {k: (str(v) if k == "checkpoint" else v) for k, v in self.recipe.items()},
                "graph": graph, "context_length": self.context_length, "text_padding": self._padding.name}

    def release(self) -> None:
        self._graph_modules.clear()
        self._state["loaded"] = None


def _tensors(module) -> dict[int, int]:
    return {t.data_ptr(): t.numel() * t.element_size() for t in chain(module.parameters(), module.buffers())}


def _recipe_name(recipe: dict[str, Any]) -> str:
    if recipe.get("random_init"):
        return str(recipe.get("preset"))
    if recipe.get("preset"):
        return f"{recipe['preset']}:{recipe['checkpoint']}"
    return str(recipe["checkpoint"])


def open_target(text: str, seed: int = 0, context_length: int | None = None, text_padding: str = "upstream",
                threads: int | None = None, verify: bool = False) -> Target:
    """A TARGET as the command line spells it (see the module docstring). Bundles keep their own context
    length and padding; `context_length` and `text_padding` apply to torch targets; `verify` checks a bundle's
    sha256 hashes."""
    if text.startswith("torch:"):
        return TorchTarget.parse(text, seed, context_length, text_padding)
    if not Path(text).exists():
        raise LitetextError(
            f"target {text} does not exist: give an exported bundle folder, torch:PRESET, torch:CHECKPOINT "
            "or torch:PRESET:UPSTREAM.pt"
        )
    return BundleTarget(text, threads=threads, verify=verify)

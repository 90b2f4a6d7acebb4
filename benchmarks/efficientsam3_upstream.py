"""EfficientSAM3 in litetext against upstream's own code (github SimonZeng7108/efficientsam3, branch main).

For each image trunk: build upstream's EfficientSAM3 image model with its builder
(`sam3.model_builder.build_efficientsam3_image_model`, MobileCLIP-S0 text at context 16), give it seeded
non-trivial weights (every tensor's channels scaled by exp(0.5 * randn); zero-initialised tensors such as
BatchNorm means and attention biases get small random values; variances stay positive), save it as upstream
saves a detector (`torch.save({"model": {"detector." + key: tensor}})`), load that file with
`litetext.load_model(preset, checkpoint=...)` (strict: every key must map) and compare, on a real photo and
on seeded noise, at 1008 px:

    student   upstream's ImageStudentEncoder (trunk + head + resize to 72x72) vs litetext's
    fpn_0..2  upstream's Sam3DualViTDetNeck levels vs litetext's vision_encoder graph

The heads and text encoder are not compared here: their tensors go through litetext's existing SAM3 /
LiteText key map (the strict load proves every one maps) and litetext's unchanged transformers modules.

Upstream's package imports modules this machine lacks (iopath, torchvision via timm, einops, triton, ...).
Only in THIS script's process, those imports are served by stand-in modules (`_stub_missing_modules`); iopath's
`g_pathmgr.open` becomes the builtin `open`. None is on the vision path compared. timm itself must be
importable (pip install --no-deps --target DIR timm; pass DIR with --timm). Run:

    python benchmarks/efficientsam3_upstream.py --upstream /tmp/efficientsam3 --timm /tmp/timmtest \
        --json benchmarks/results/efficientsam3_upstream.json
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import platform
import resource
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from litetext.calibration.data import builtin_asset, load_rgb, preprocess_image
from litetext.files import write_json_atomic
from litetext.models.efficientsam3_trunks import TRUNKS
from litetext.models.graphs import VisionEncoderGraph
from litetext.models.loading import load_model

IMAGE_SIZE = 1008  # upstream builds every student for 1008 px (72x72 output, TinyViT's img_size)
STUBBED = ("iopath", "torchvision", "einops", "triton", "decord", "pycocotools", "hydra", "omegaconf",
           "submitit", "psutil", "cv2", "matplotlib", "sklearn")


class _StandIn(type):
    """A class whose every attribute is another stand-in class (enough for module-level uses)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandIn(name, (), {"__init__": lambda self, *a, **k: None})

    def __hash__(cls):
        return id(cls)


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "g_pathmgr":
            return types.SimpleNamespace(open=open, exists=lambda p: Path(p).exists())
        return _StandIn(name, (), {"__init__": lambda self, *a, **k: None})


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StandInModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def _stub_missing_modules() -> list[str]:
    missing = []
    for name in STUBBED:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    sys.meta_path.insert(0, _StandInFinder())
    return missing


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Seeded, non-trivial weights: each channel (dim 0) of every float tensor scaled by exp(0.5 * randn)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.state_dict(keep_vars=True).items()):
            if not t.is_floating_point():
                continue
            if t.abs().max() == 0:  # zeros (BN means, biases, attention biases) stay zero when scaled
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            if t.ndim >= 1 and t.numel() > 1:
                shape = (t.shape[0],) + (1,) * (t.ndim - 1)
                t.mul_(torch.exp(0.5 * torch.randn(shape, generator=gen)))
            if name.endswith("running_var"):
                t.abs_().add_(0.1)


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float((reference - other).abs().max() / reference.abs().max())


def compare(trunk: str, args, bpe: Path) -> dict:
    from sam3.model_builder import build_efficientsam3_image_model

    spec = TRUNKS[trunk]
    torch.manual_seed(args.seed)
    upstream = build_efficientsam3_image_model(
        bpe_path=str(bpe), device="cpu", eval_mode=True, checkpoint_path=None, load_from_HF=False,
        backbone_type=spec.family, model_name=spec.variant, text_encoder_type="MobileCLIP-S0",
        text_encoder_context_length=16,
    )
    perturb(upstream, args.seed)
    upstream.eval()  # after the weights change: TinyViT caches its attention biases in eval()
    vision = upstream.backbone.vision_backbone
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"efficientsam3_{trunk}.pt"
        torch.save({"model": {f"detector.{k}": v for k, v in upstream.state_dict().items()}}, path)
        file_mib = path.stat().st_size / 2**20
        loaded = load_model(f"efficientsam3-{trunk}-s0", checkpoint=path, context_length=16)
    graph = VisionEncoderGraph(loaded).eval()
    photo = torch.from_numpy(preprocess_image(load_rgb(builtin_asset("chelsea.png")), IMAGE_SIZE))
    noise = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    rows = {}
    for label, pixels in (("photo", photo), ("noise", noise)):
        with torch.no_grad():
            up_student = vision.trunk.model(pixels)
            up_levels = vision(pixels)[0]
            ours_student = loaded.model.vision_encoder.backbone.feature_map(pixels)
            ours_levels = graph(pixels)
        errors = {"student": relative_error(up_student, ours_student)}
        errors.update({f"fpn_{i}": relative_error(up_levels[i], ours_levels[i]) for i in range(3)})
        rows[label] = errors
    # Control: the same comparison after a 0.1% change to litetext's first trunk tensor must fail, or the
    # comparison could not see a wrong weight.
    first = next(iter(loaded.model.vision_encoder.backbone.trunk.parameters()))
    with torch.no_grad():
        first.mul_(1.001)
        control = relative_error(vision.trunk.model(photo), loaded.model.vision_encoder.backbone.feature_map(photo))
    worst = max(v for errors in rows.values() for v in errors.values())
    return {
        "trunk": trunk, "upstream_builder": f"backbone_type={spec.family!r}, model_name={spec.variant!r}",
        "trunk_params_millions": round(sum(p.numel() for p in loaded.model.vision_encoder.backbone.trunk.parameters()) / 1e6, 3),
        "checkpoint_mib": round(file_mib, 1), "keys_loaded": len(loaded.model.state_dict()),
        "max_relative_error": rows, "worst": worst, "control_first_tensor_x1.001": control, "passes_1e-4": worst <= 1e-4,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="an efficientsam3 checkout (holds sam3/sam3/model_builder.py)")
    parser.add_argument("--timm", help="a folder holding timm (upstream imports it), e.g. a pip --target folder")
    parser.add_argument("--trunks", default=",".join(TRUNKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/results/efficientsam3_upstream.json")
    args = parser.parse_args()

    root = Path(args.upstream).resolve()
    if not (root / "sam3" / "sam3" / "model_builder.py").is_file():
        parser.error(f"{root} is not an efficientsam3 checkout (no sam3/sam3/model_builder.py)")
    # transformers probes torchvision when its auto classes first load: load them before the stand-ins exist.
    import transformers.models.auto.image_processing_auto  # noqa: F401
    from transformers import Sam3LiteTextModel, Sam3Model  # noqa: F401

    stubbed = _stub_missing_modules()
    sys.path[:0] = [str(root / "sam3")] + ([args.timm] if args.timm else [])
    bpe = builtin_asset("bpe_simple_vocab_16e6.txt.gz")
    torch.set_num_threads(1)
    results = []
    for trunk in args.trunks.split(","):
        start = time.perf_counter()
        row = compare(trunk, args, bpe)
        row["seconds"] = round(time.perf_counter() - start, 1)
        results.append(row)
        errs = row["max_relative_error"]
        print(f"{trunk:8s} params {row['trunk_params_millions']:6.2f}M  "
              + "  ".join(f"{k} {max(e[k] for e in errs.values()):.1e}" for k in ("student", "fpn_0", "fpn_1", "fpn_2"))
              + f"  {'PASS' if row['passes_1e-4'] else 'FAIL'}  ({row['seconds']} s)", flush=True)
    out = {
        "what": "EfficientSAM3 vision path, litetext vs upstream's own modules, fp32, max |diff| / max |upstream|",
        "weights": f"random, seed {args.seed}, channels scaled by exp(0.5 randn), saved by upstream's layout",
        "image_size": IMAGE_SIZE,
        "inputs": ["builtin chelsea.png (resized, mean/std 0.5)", "seeded normal noise (seed 1)"],
        "stubbed_imports": stubbed,
        "machine": platform.platform(), "torch": torch.__version__,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "results": results,
    }
    write_json_atomic(Path(args.json), out)
    print(f"wrote {args.json}; all pass: {all(r['passes_1e-4'] for r in results)}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

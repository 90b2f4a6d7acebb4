"""Fixed-vocabulary text path and pruned token table, full-size architecture (RANDOM weights, seed 0, unless
--checkpoint).

1. Fixed vocabulary: the 80 COCO names' text features (context 16, 256 wide) stored as fp16 and int8, from the
   PyTorch text graph; size of the files against the text encoder they replace, and storage error.
2. Pruned token table: keep the tokens of --calib (+ specials, 512 byte tokens, merge ancestors), slice the
   token table of the fp32 text_encoder.onnx, and measure on --eval-count seeded held-out prompts: parameters,
   coverage (share of prompts whose tokens are all kept: exact), max error on those (ONNX Runtime), and for the
   rest the cosine of the mean-pooled valid-token features (pruned tokenizer + pruned graph against full
   tokenizer + full graph; their token counts differ, so positions cannot be compared one to one).

    python benchmarks/vocabulary.py --calib ../shared/data/prompts/calib --eval ../shared/data/prompts/eval
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from litetext.calibration.data import builtin_asset, read_prompts, seeded_sample
from litetext.export.bundle import write_json_atomic
from litetext.models.graphs import get_padding
from litetext.models.loading import load_model
from litetext.vocabulary import (
    FEATURES_FILE,
    PROMPTS_FILE,
    build_fixed_vocabulary,
    prune_onnx_text_encoder,
    prune_vocabulary,
)

MIB = 2**20


def _text_encoder(loaded, work: Path, ctx: int, log) -> Path:
    """The fp32 full-size text_encoder.onnx (reused when a matching one is in `work`)."""
    from litetext.export import export_bundle

    for folder in (work / "litetext-s0-text-ctx16-fp32", work / "vocabulary-s0-text-fp32"):
        m = folder / "manifest.json"
        if m.is_file():
            man = json.loads(m.read_text())
            if (man["model"]["weights_label"] == loaded.weights_label and man["context_length"] == ctx
                    and man["precision"] == "fp32" and man["text_padding"]["name"] == "upstream"
                    and man["model"]["preset"] == loaded.preset):
                log(f"reusing {folder}")
                return folder / "text_encoder.onnx"
    out = work / "vocabulary-s0-text-fp32"
    export_bundle(loaded, out, graphs=["text_encoder"], context_length=ctx, force=True, progress=log)
    return out / "text_encoder.onnx"


def _run(session, ids: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([session.run(None, {"input_ids": ids[i : i + batch]})[0] for i in range(0, len(ids), batch)])


def _pooled(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    return (features * m).sum(1) / m.sum(1)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def main() -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from litetext.tokenizer import ClipTokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib", nargs="+", required=True)
    parser.add_argument("--eval", nargs="+", required=True)
    parser.add_argument("--model", default="litetext-s0")
    parser.add_argument("--checkpoint")
    parser.add_argument("--eval-count", type=int, default=1000)
    parser.add_argument("--work", default="benchmarks/work")
    parser.add_argument("--json", default="benchmarks/results/vocabulary.json")
    args = parser.parse_args()
    log = lambda m: print("  ", m, flush=True)  # noqa: E731
    ctx, padding = 16, get_padding("upstream")
    work = Path(args.work)
    loaded = (load_model(args.model, checkpoint=args.checkpoint) if args.checkpoint
              else load_model(args.model, random_init=True, seed=0))
    text_onnx = _text_encoder(loaded, work, ctx, log)
    text_bytes = text_onnx.stat().st_size

    # 1. fixed vocabulary
    names = read_prompts([builtin_asset("prompts_coco_80_names.txt")])
    fixed = []
    for precision in ("fp16", "int8"):
        t0 = time.perf_counter()
        vocab = build_fixed_vocabulary(loaded, names, ctx, padding, precision=precision)
        folder = work / f"vocabulary-coco80-{precision}"
        entry = vocab.save(folder)
        files = (folder / FEATURES_FILE).stat().st_size + (folder / PROMPTS_FILE).stat().st_size
        fixed.append({
            "prompts": len(names), "storage": precision, "shape": entry["shape"], "file_bytes": files,
            "file_mib": round(files / MIB, 4), "vs_text_encoder_fp32": round(files / text_bytes, 5),
            "storage_max_abs_error": entry["storage_error"]["max_abs_error"],
            "storage_max_abs_reference": entry["storage_error"]["max_abs_reference"],
            "seconds": round(time.perf_counter() - t0, 2),
        })
        log(f"fixed vocabulary {precision}: {files / MIB:.3f} MiB")

    # 2. pruned token table
    calib = read_prompts(args.calib)
    held_out = read_prompts(args.eval)
    held_out = seeded_sample(held_out, args.eval_count)
    pruned = prune_vocabulary(calib)
    pruned_onnx = work / "vocabulary-s0-text-pruned" / "text_encoder.onnx"
    pruned_onnx.parent.mkdir(parents=True, exist_ok=True)
    report = prune_onnx_text_encoder(text_onnx, pruned_onnx, pruned)
    pruned.write_tokenizer_json(pruned_onnx.parent / "tokenizer.json", ctx, padding.pad_id)
    pruned.save(pruned_onnx.parent / "pruned_tokens.json")

    tok = ClipTokenizer()
    covered = np.array([pruned.covers(p, tok) for p in held_out])
    full_batch = tok(held_out, context_length=ctx, pad_id=padding.pad_id)
    fast = Tokenizer.from_str(pruned.tokenizer_json(ctx, padding.pad_id))
    encodings = fast.encode_batch(held_out)
    new_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    new_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    ids_equal = (pruned.old_to_new[full_batch.input_ids] == new_ids).all(1)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    full = ort.InferenceSession(str(text_onnx), options, providers=["CPUExecutionProvider"])
    small = ort.InferenceSession(str(pruned_onnx), options, providers=["CPUExecutionProvider"])
    want = _run(full, full_batch.input_ids)
    got = _run(small, new_ids)
    exact_err = float(np.abs(want[covered] - got[covered]).max()) if covered.any() else 0.0
    cos = _cos(_pooled(want, full_batch.attention_mask), _pooled(got, new_mask))[~covered]
    extra_tokens = (new_mask.sum(1) - full_batch.attention_mask.sum(1))[~covered]
    params_ratio = report["ratio"]
    result = {
        "weights": loaded.weights_label,
        "fixed_vocabulary": fixed,
        "text_encoder_fp32_bytes": text_bytes,
        "pruned": {
            "calib_prompts": len(calib),
            "corpus_tokens": pruned.corpus_tokens,
            "kept_tokens": len(pruned),
            "kept_merges": len(pruned.merges()),
            **report,
            "file_bytes_before": text_bytes,
            "file_bytes_after": pruned_onnx.stat().st_size,
            "held_out_prompts": len(held_out),
            "coverage": float(covered.mean()),
            "covered_ids_identical": bool(ids_equal[covered].all()),
            "covered_max_abs_error": exact_err,
            "uncovered": {
                "prompts": int((~covered).sum()),
                "pooled_cosine_mean": float(cos.mean()) if cos.size else 1.0,
                "pooled_cosine_worst_1pct": float(np.percentile(cos, 1)) if cos.size else 1.0,
                "pooled_cosine_min": float(cos.min()) if cos.size else 1.0,
                "extra_tokens_mean": float(extra_tokens.mean()) if cos.size else 0.0,
            },
        },
        "command": "python benchmarks/vocabulary.py --calib " + " ".join(args.calib) + " --eval " + " ".join(args.eval),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), result)

    print(f"\nweights: {loaded.weights_label}; text_encoder.onnx fp32 {text_bytes / MIB:.1f} MiB")
    print("\n| fixed vocabulary (80 COCO names) | file | vs text encoder | storage max error |")
    print("|---|---|---|---|")
    for r in fixed:
        print(f"| {r['storage']} {r['shape']} | {r['file_mib']:.3f} MiB | {r['vs_text_encoder_fp32']:.4f}x | "
              f"{r['storage_max_abs_error']:.2e} (ref max {r['storage_max_abs_reference']:.2f}) |")
    p, u = result["pruned"], result["pruned"]["uncovered"]
    print("\n| pruned token table | value |\n|---|---|")
    for k, v in [
        ("kept tokens (corpus / with bytes, specials, ancestors)", f"{p['corpus_tokens']} / {p['kept_tokens']} of 49408"),
        ("parameters", f"{p['parameters_before'] / 1e6:.2f}M -> {p['parameters_after'] / 1e6:.2f}M ({params_ratio:.3f}x)"),
        ("file", f"{p['file_bytes_before'] / MIB:.1f} -> {p['file_bytes_after'] / MIB:.1f} MiB"),
        ("held-out coverage (exact)", f"{p['coverage']:.3f} of {p['held_out_prompts']}"),
        ("covered: max error (ORT)", f"{p['covered_max_abs_error']:.3g}"),
        ("uncovered: pooled cosine mean / worst 1% / min",
         f"{u['pooled_cosine_mean']:.4f} / {u['pooled_cosine_worst_1pct']:.4f} / {u['pooled_cosine_min']:.4f}"),
        ("uncovered: extra tokens per prompt", f"{u['extra_tokens_mean']:.2f}"),
    ]:
        print(f"| {k} | {v} |")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

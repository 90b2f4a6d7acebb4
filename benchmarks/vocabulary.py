"""Fixed-vocabulary and pruned text paths, full-size architecture (RANDOM weights, seed 0, unless --checkpoint),
every one made by export_bundle, as an app gets it.

1. Fixed vocabulary: bundles holding the 80 COCO names' text features (context 16, 256 wide) in fp16 and int8
   instead of a text encoder; their size and storage error.
2. Pruned text encoder: `export_bundle(..., prune_vocabulary=<--calib prompts>)` at fp32 and INT8 (calibrated on
   --calib), beside the unpruned exports at the same precisions, all checked on --eval-count seeded held-out
   prompts (measured only: never calibrated or tuned on): parameters, files, coverage, the covered prompts'
   parity (gated by the export itself) and the uncovered prompts' pooled cosine (reported).

    python benchmarks/vocabulary.py --calib ../shared/data/prompts/calib --eval ../shared/data/prompts/eval

The bundles stay in --work (benchmarks/work/vocabulary-s0-*) for `litetext bench` (docs/vocabulary.md).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from litetext.calibration.data import builtin_asset, read_prompts, seeded_sample
from litetext.export import export_bundle
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic
from litetext.vocabulary.build import prune_vocabulary, text_parameters

from benchmark_args import load_benchmark_model, prompt_arguments

MIB = 2**20
CTX = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    prompt_arguments(parser)
    parser.add_argument("--work", default="benchmarks/work")
    parser.add_argument("--json", default="benchmarks/results/vocabulary.json")
    args = parser.parse_args()
    log = lambda m: print("  ", m, flush=True)  # noqa: E731
    work = Path(args.work)
    loaded = load_benchmark_model(args)
    calib = read_prompts(args.calib)
    held_out = seeded_sample(read_prompts(args.eval), args.eval_count)

    # 1. fixed vocabulary
    names = read_prompts([builtin_asset("prompts_coco_80_names.txt")])
    fixed = []
    for storage in ("fp16", "int8"):
        out = work / f"vocabulary-s0-coco80-{storage}"
        m = export_bundle(loaded, out, graphs=["text_encoder"], context_length=CTX, vocabulary=names,
                          vocabulary_precision=storage, force=True, progress=log)
        entry = m["text_path"]
        fixed.append({"bundle": str(out), "prompts": entry["prompts"], "storage": storage, "shape": entry["shape"],
                      "text_path_bytes": entry["bytes"], "storage_error": entry["storage_error"]})

    # 2. pruned text encoder, beside the unpruned one
    rows = []
    for precision in ("fp32", "int8"):
        for pruned in (False, True):
            out = work / f"vocabulary-s0-{'pruned-' if pruned else ''}{precision}"
            print(f"== {out.name}", flush=True)
            m = export_bundle(loaded, out, graphs=["text_encoder"], context_length=CTX, precision=precision,
                              parity_prompts=held_out, calib_prompts=calib if precision == "int8" else None,
                              prune_vocabulary=calib if pruned else None, force=True, progress=log)
            graph = m["graphs"]["text_encoder"]
            tokenizer_bytes = (out / "tokenizer.json").stat().st_size
            row = {"bundle": str(out), "precision": precision, "pruned": pruned, "text_encoder_bytes": graph["bytes"],
                   "tokenizer_json_bytes": tokenizer_bytes, "text_path_bytes": graph["bytes"] + tokenizer_bytes,
                   "parameters": text_parameters(loaded), "export_seconds": graph["export_seconds"],
                   "held_out_parity": graph["parity"]["outputs"]["text_features"]}
            if "calibration" in graph:
                row["layers_kept_fp32_activations"] = graph["calibration"].get("layers_kept_fp32_activations")
            if pruned:
                entry = m["text_path"]
                row.update(parameters=entry["parameters"]["after"], text_path=entry)
            rows.append(row)

    vocabulary = prune_vocabulary(calib)
    result = {
        "benchmark": "vocabulary", "model": args.model, "weights": loaded.weights_label, "context_length": CTX,
        "corpus_prompts": len(calib), "held_out_prompts": len(held_out),
        # share of held-out prompts whose tokens are all kept (CLIP's tokenizer); the bundles' "covered" also
        # asks tokenizer.json for the same ids, which the two differ on only where its cleaning differs
        "held_out_all_tokens_kept": vocabulary.coverage(held_out),
        "fixed_vocabulary": fixed, "text_encoders": rows,
        "command": "python benchmarks/vocabulary.py --calib " + " ".join(args.calib) + " --eval " + " ".join(args.eval),
        "machine": platform.platform(), "tools": tool_versions(),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), result)

    print(f"\nweights: {loaded.weights_label}")
    print("\n| fixed vocabulary (80 COCO names) | text path (npz + list) | storage max error |\n|---|---|---|")
    for r in fixed:
        e = r["storage_error"]
        print(f"| {r['storage']} {r['shape']} | {r['text_path_bytes'] / MIB:.3f} MiB | {e['max_abs_error']:.2e} "
              f"(features reach {e['max_abs_reference']:.2f}) |")
    print("\n| text encoder | parameters | text_encoder.onnx | + tokenizer.json | held-out parity: cos mean / "
          "worst 1% / min, max error | uncovered: pooled cos mean / worst 1% / min, extra tokens |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        p = r["held_out_parity"]
        name = f"{'pruned ' if r['pruned'] else ''}{r['precision']}"
        parity = (f"{p['cosine_mean']:.5f} / {p['cosine_worst_1pct']:.5f} / {p['cosine_min']:.5f}, "
                  f"{p['max_abs_error']:.3g}")
        rest = "–"
        if r["pruned"]:
            c, u = r["text_path"]["parity_prompts"], r["text_path"]["uncovered_parity"]
            parity += f" ({c['covered']} covered of {c['prompts']})"
            rest = (f"{u['pooled_cosine_mean']:.4f} / {u['pooled_cosine_worst_1pct']:.4f} / "
                    f"{u['pooled_cosine_min']:.4f}, {u['extra_tokens_mean']:.2f}")
        print(f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['text_encoder_bytes'] / MIB:.1f} MiB | "
              f"{r['text_path_bytes'] / MIB:.1f} MiB | {parity} | {rest} |")
    entry = rows[1]["text_path"]
    print(f"\nkept {entry['kept_tokens']} of {entry['vocabulary_size']} tokens ({entry['corpus']['tokens']} used by "
          f"the corpus), {entry['kept_merges']} of {entry['merges']} merges; held-out prompts with every token kept: "
          f"{result['held_out_all_tokens_kept']:.3f}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

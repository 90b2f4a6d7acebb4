"""Teacher against students on a CUDA GPU in eager PyTorch: text-encoder latency and memory, and the whole
prompt + image -> detections pipeline at 1008 px, fp32 and fp16.

Weights are RANDOM (seed 0): latency and memory are real, outputs mean nothing. Prompts are the built-in 80 COCO
names, images the two built-in photos, so the script needs nothing beside the package (a GPU machine may not
have the shared data). fp16 is the model cast to half (`module.half()`), measured against fp32 on the CPU:
cosine per valid token for text features, per sample for the heads.

Timing: CUDA events around each call after warm-up, the inputs already on the GPU and outputs left there (what an
app that keeps tensors on the device pays); p50 and p90 of --runs calls. Memory: bytes of the parameters and the
peak CUDA allocation during the timed calls.

    python benchmarks/gpu_latency.py --json benchmarks/results/gpu_latency.json
    python benchmarks/gpu_latency.py --device cpu --models litetext-s0 --runs 3 --skip-pipeline   # a dry run
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
from pathlib import Path

import numpy as np
import torch

from litetext.benchmarks.device import device_info
from litetext.calibration.data import builtin_images, builtin_prompts, load_rgb, preprocess_image
from litetext.calibration.parity import tensor_parity
from litetext.files import write_json_atomic
from litetext.models.graphs import build_graph, get_padding
from litetext.models.loading import load_model
from litetext.tokenizer import ClipTokenizer

MODELS = ["sam3", "litetext-s0", "litetext-s1", "litetext-l"]
CONTEXT = {"sam3": 32}  # students: their own (16)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def timed(call, device: torch.device, warmup: int, runs: int) -> dict[str, float]:
    """p50 / p90 / mean milliseconds of `call()` and the peak memory it allocated (CUDA only)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        call()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(runs):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
    result = {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)),
              "mean_ms": float(np.mean(times)), "runs": runs}
    if cuda:
        result["peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def parameter_mib(module: torch.nn.Module) -> float:
    seen, total = set(), 0
    for t in [*module.parameters(), *module.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2**20


def heads_parameter_mib(heads: torch.nn.Module) -> float:
    """The heads graph wraps the whole model: count what is not the vision or text encoder."""
    model = heads.model
    skip = {t.data_ptr() for m in (model.vision_encoder, model.text_encoder, model.text_projection)
            for t in [*m.parameters(), *m.buffers()]}
    return sum(t.numel() * t.element_size() for t in [*heads.parameters(), *heads.buffers()]
               if t.data_ptr() not in skip) / 2**20


def on(device, dtype, tensors):
    """Feeds on the device; float tensors in the model's dtype."""
    return [t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype) for t in tensors]


def text_rows(preset, args, device, tokens_by_ctx) -> list[dict]:
    loaded = load_model(preset, random_init=True, seed=0)
    ctx = CONTEXT.get(preset, 16)
    padding = get_padding("upstream")
    ids, mask = tokens_by_ctx(ctx)
    cpu_graph = build_graph("text_encoder", loaded, ctx, padding)
    with torch.inference_mode():
        reference = cpu_graph(torch.from_numpy(ids)).numpy()
    rows = []
    for dtype_name in args.dtypes:
        graph = build_graph("text_encoder", loaded, ctx, padding).to(device=device, dtype=DTYPES[dtype_name])
        with torch.inference_mode():
            got = np.concatenate([graph(*on(device, None, [torch.from_numpy(ids[i : i + 8])])).float().cpu().numpy()
                                  for i in range(0, len(ids), 8)])
            parity = tensor_parity(reference, got, mask, per_token=True)
            for batch in args.batch:
                feed = on(device, None, [torch.from_numpy(ids[:batch])])
                row = {"graph": "text_encoder", "model": preset, "context_length": ctx, "dtype": dtype_name,
                       "batch": batch, "parameters_mib": parameter_mib(graph),
                       **timed(lambda: graph(*feed), device, args.warmup, args.runs), "parity_vs_cpu_fp32": parity}
                rows.append(row)
                print(f"{preset:12s} text  {dtype_name} b{batch}: p50 {row['p50_ms']:.3f} ms  "
                      f"params {row['parameters_mib']:.0f} MiB  cos mean {parity['cosine_mean']:.6f}", flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def pipeline_rows(args, device, tokens_by_ctx) -> list[dict]:
    """S0's vision encoder and heads with each text encoder in front: one prompt, one image, batch 1."""
    padding = get_padding("upstream")
    student = load_model("litetext-s0", random_init=True, seed=0)
    teacher = load_model("sam3", random_init=True, seed=0)
    rgb = load_rgb(builtin_images()[0])
    pixels = torch.from_numpy(preprocess_image(rgb, student.model.config.vision_config.backbone_config.image_size))
    models = (("sam3", teacher), ("litetext-s0", student))
    references = {}
    with torch.inference_mode():  # fp32 on the CPU, before any module moves to the device
        cpu_levels = build_graph("vision_encoder", student, 16, padding)(pixels)
        cpu_heads = build_graph("heads", student, 16, padding)
        for name, loaded in models:
            ids, mask = tokens_by_ctx(CONTEXT.get(name, 16))
            features = build_graph("text_encoder", loaded, CONTEXT.get(name, 16), padding)(torch.from_numpy(ids[:1]))
            references[name] = [o.numpy() for o in cpu_heads(*cpu_levels, features, torch.from_numpy(mask[:1]))]
    rows = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        vision = build_graph("vision_encoder", student, 16, padding).to(device=device, dtype=dtype)
        heads = build_graph("heads", student, 16, padding).to(device=device, dtype=dtype)
        with torch.inference_mode():
            levels = vision(*on(device, dtype, [pixels]))
            for name, loaded in models:
                ctx = CONTEXT.get(name, 16)
                ids, mask = tokens_by_ctx(ctx)
                text = build_graph("text_encoder", loaded, ctx, padding).to(device=device, dtype=dtype)
                feed_ids = torch.from_numpy(ids[:1]).to(device)
                feed_mask = torch.from_numpy(mask[:1]).to(device)

                def whole():
                    features = text(feed_ids)
                    return heads(*vision(*on(device, dtype, [pixels])), features, feed_mask)

                def text_only():
                    return text(feed_ids)

                def heads_only():
                    return heads(*levels, text(feed_ids), feed_mask)

                row = {"graph": "pipeline", "model": name, "dtype": dtype_name, "batch": 1,
                       "image_size": int(pixels.shape[-1]), "context_length": ctx,
                       "parameters_mib": parameter_mib(text) + parameter_mib(vision) + heads_parameter_mib(heads),
                       "text_parameters_mib": parameter_mib(text),
                       "whole": timed(whole, device, args.warmup, args.runs),
                       "text_encoder": timed(text_only, device, args.warmup, args.runs),
                       "text_and_heads": timed(heads_only, device, args.warmup, args.runs)}
                row["text_share_of_whole"] = row["text_encoder"]["p50_ms"] / row["whole"]["p50_ms"]
                outputs = [o.float().cpu().numpy() for o in whole()]
                row["parity_vs_cpu_fp32"] = {
                    out: tensor_parity(want, got, None, per_token=False)
                    for out, want, got in zip(("pred_logits", "pred_boxes", "pred_masks"), references[name], outputs)}
                rows.append(row)
                print(f"{name:12s} pipeline {dtype_name}: whole p50 {row['whole']['p50_ms']:.2f} ms, text "
                      f"{row['text_encoder']['p50_ms']:.2f} ms ({100 * row['text_share_of_whole']:.1f}%), "
                      f"params {row['parameters_mib']:.0f} MiB", flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | graph | dtype | batch | p50 ms | p90 ms | params MiB | peak alloc MiB | cosine mean vs CPU fp32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["graph"] == "text_encoder":
            lines.append(f"| {r['model']} | text encoder (ctx {r['context_length']}) | {r['dtype']} | {r['batch']} | "
                         f"{r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['parameters_mib']:.0f} | "
                         f"{r.get('peak_allocated_mib', float('nan')):.0f} | {r['parity_vs_cpu_fp32']['cosine_mean']:.6f} |")
        else:
            w = r["whole"]
            lines.append(f"| {r['model']} | prompt + {r['image_size']} px image -> detections | {r['dtype']} | 1 | "
                         f"{w['p50_ms']:.2f} | {w['p90_ms']:.2f} | {r['parameters_mib']:.0f} | "
                         f"{w.get('peak_allocated_mib', float('nan')):.0f} | masks {r['parity_vs_cpu_fp32']['pred_masks']['cosine_mean']:.6f} "
                         f"(text {r['text_encoder']['p50_ms']:.2f} ms, {100 * r['text_share_of_whole']:.1f}% of whole) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--dtypes", default="fp32,fp16")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--json", default="benchmarks/results/gpu_latency.json")
    args = parser.parse_args()
    args.dtypes = args.dtypes.split(",")
    args.batch = [int(b) for b in args.batch.split(",")]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; pass --device cpu for a dry run")
    torch.manual_seed(0)

    prompts = builtin_prompts()
    tokenizer = ClipTokenizer()

    def tokens_by_ctx(ctx):
        batch = tokenizer(prompts, context_length=ctx, pad_id=0)
        return batch.input_ids, batch.attention_mask

    rows = []
    for preset in args.models.split(","):
        rows += text_rows(preset, args, device, tokens_by_ctx)
    if not args.skip_pipeline:
        rows += pipeline_rows(args, device, tokens_by_ctx)
    result = {"benchmark": "gpu_latency", "weights": "RANDOM weights (seed 0), not a trained model",
              "runtime": f"torch eager {torch.__version__}", "device": device_info(), "machine": platform.platform(),
              "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), result)
    print(table(rows))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

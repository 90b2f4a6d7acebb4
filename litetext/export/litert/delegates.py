"""What a .tflite graph asks of LiteRT's delegates, as far as this machine can tell.

- XNNPACK (CPU): measured. The interpreter applies XNNPACK at load; every node left outside its partitions
  runs on LiteRT's reference kernels. Those nodes are counted here by op.
- GPU delegate: not measurable here (no Android GPU). What is checked is what Google's SAM3 sample names as its
  limits: tensors of rank > 4, complex tensors, dynamic dimensions, and embedding lookups (the sample keeps the
  token table on the host). The model analyzer's GPU verdict is recorded too, but the analyzer in ai-edge-litert
  2.3.0 answers "compatible" even for a rank-5 CUMSUM graph, so it is not evidence (tests check that).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from litetext.runtimes.litert_runner import open_interpreter

DELEGATE_OP = "DELEGATE"


def xnnpack_fallback(path: Path) -> dict:
    """Nodes XNNPACK did not take, by op, and how many partitions it made."""
    interpreter = open_interpreter(path, threads=1)
    ops = interpreter._get_ops_details()  # every node: the model's, then the delegate kernels' (no public API)
    delegates = [o for o in ops if o["op_name"] == DELEGATE_OP]
    model_ops = [o for o in ops if o["op_name"] != DELEGATE_OP]
    producer = {t: o["index"] for o in model_ops for t in o["outputs"]}
    taken: set[int] = set()
    for d in delegates:
        # A partition is the nodes between its inputs and its outputs: walk back from the outputs.
        boundary, pending = set(d["inputs"]), list(d["outputs"])
        while pending:
            tensor = pending.pop()
            node = producer.get(tensor)
            if tensor in boundary or node is None or node in taken:
                continue
            taken.add(node)
            pending.extend(ops[node]["inputs"])
    left = Counter(o["op_name"] for o in model_ops if o["index"] not in taken)
    return {"ops": len(model_ops), "partitions": len(delegates), "not_delegated": sum(left.values()),
            "not_delegated_by_op": dict(sorted(left.items()))}


def gpu_constraints(path: Path) -> dict:
    """The graph's tensors and ops against the GPU delegate's known limits, and the analyzer's verdict."""
    interpreter = open_interpreter(path, threads=1)
    tensors = interpreter.get_tensor_details()
    ops = interpreter._get_ops_details()
    rank5 = sorted({t["name"] for t in tensors if len(t["shape"]) > 4})
    complex_ = sorted({t["name"] for t in tensors if "complex" in str(t["dtype"])})
    dynamic = sorted({t["name"] for t in tensors if any(int(d) < 0 for d in t["shape_signature"])})
    lookups = sum(o["op_name"] in ("EMBEDDING_LOOKUP", "GATHER") for o in ops)
    return {
        "tensors_rank_above_4": len(rank5),
        "complex_tensors": len(complex_),
        "dynamic_tensors": len(dynamic),
        "embedding_lookups": lookups,
        "examples": (rank5 + complex_ + dynamic)[:5],
        "analyzer_verdict": analyzer_verdict(path),
    }


def analyzer_verdict(path: Path) -> str:
    try:
        from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer
    except ImportError:
        return "model analyzer not available"
    text = analyzer.ModelAnalyzer(str(path), True, True)
    warnings = [line.strip() for line in text.splitlines() if "GPU COMPATIBILITY WARNING" in line]
    if warnings:
        return f"{len(warnings)} warnings: {warnings[0]}"
    verdict = [line.strip() for line in text.splitlines() if "GPU delegate" in line]
    return verdict[0] if verdict else "no GPU verdict in the analyzer's output"


def delegate_report(path: Path) -> dict:
    return {"xnnpack": xnnpack_fallback(path), "gpu": gpu_constraints(path)}


def check_bundle(bundle) -> dict[str, dict]:
    """The delegate report of every .tflite graph of a litert bundle, measured again on this machine."""
    from litetext.errors import LitetextError
    from litetext.bundle import Bundle

    opened = Bundle.open(bundle)
    if opened.manifest.get("target") != "litert":
        raise LitetextError(f"{bundle} is a {opened.manifest.get('target')} bundle; litetext check --target litert "
                            "checks litert bundles (litetext export --target litert)")
    return {name: delegate_report(Path(bundle) / graph["file"]) for name, graph in opened.manifest["graphs"].items()}


def findings(report: dict) -> tuple[list[str], list[str]]:
    """(errors, warnings): what the GPU delegate cannot take is an error; XNNPACK fallbacks and embedding
    lookups (the GPU runs them on the CPU) are warnings."""
    gpu, xnnpack = report["gpu"], report["xnnpack"]
    errors = [f"{gpu[key]} {what} (e.g. {', '.join(gpu['examples'][:2])})" for key, what in (
        ("tensors_rank_above_4", "tensors of rank above 4: the GPU delegate takes rank <= 4"),
        ("complex_tensors", "complex tensors: no delegate takes them"),
        ("dynamic_tensors", "tensors with dynamic dimensions: the GPU delegate wants static shapes"),
    ) if gpu[key]]
    warnings = []
    if xnnpack["not_delegated"]:
        ops = ", ".join(f"{op} x{n}" for op, n in xnnpack["not_delegated_by_op"].items())
        warnings.append(f"{xnnpack['not_delegated']} of {xnnpack['ops']} ops not taken by XNNPACK ({ops}), "
                        f"{xnnpack['partitions']} XNNPACK partitions")
    if gpu["embedding_lookups"]:
        warnings.append(f"{gpu['embedding_lookups']} embedding lookups: the GPU delegate has none; export the text "
                        "encoder with text_input='embeddings' to keep the table on the host")
    return errors, warnings

"""ONNX model files: node order, saving (external weights past protobuf's limit), and which files a graph is.
Used by the ONNX and TensorRT targets and by INT8 calibration, which all write ONNX graphs."""

from __future__ import annotations

from pathlib import Path


def topologically_sorted(model):
    """ONNX Runtime's quantizer and fp16 converter append nodes (weight DequantizeLinear, input Casts) at the end
    of the graph; the ONNX spec (and onnx.checker, and TensorRT's parser) want every node after its inputs."""
    graph = model.graph
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise RuntimeError(f"graph has a cycle or dangling inputs at {pending[0].name}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)
    return model



def save(model, path: Path) -> None:
    """Save one file when it fits protobuf's 2 GiB limit, else weights beside it in `<name>.data`."""
    import onnx

    large = model.ByteSize() > 2**31 - 2**26
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=path.name + ".data" if large else None)



def files_of(path: Path) -> list[Path]:
    """The files an exported graph consists of (the graph, and its external weights if any)."""
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]

"""`litetext info BUNDLE`: a bundle's manifest as a person reads it (registered on the main group)."""

from __future__ import annotations

from typing import Any

import click

from litetext.cli_helpers import friendly_errors

MIB = 2**20


def _shape(tensor: dict[str, Any]) -> str:
    return f"{tensor['name']} {tensor['dtype']} [{', '.join(map(str, tensor['shape']))}]"


def _parity_runtime(manifest: dict[str, Any], graph: dict[str, Any]) -> str:
    """Which runtime ran the artifact for its parity figures: what was checked, and what only simulated."""
    target = manifest["target"]
    recorded = (graph.get(target) or {}).get("parity_runtime") if isinstance(graph.get(target), dict) else None
    return recorded or {"onnx": "ONNX Runtime on the CPU, the artifact itself"}.get(target, "not recorded")


def _verdict(manifest: dict[str, Any], graph: dict[str, Any]) -> str:
    runtime = _parity_runtime(manifest, graph)
    if runtime.startswith("simulated"):
        return "only simulated: the artifact itself did not run on the export machine"
    if manifest["target"] == "tensorrt" and "no engine" in runtime:
        return "checked as an ONNX graph; no TensorRT engine was built or run"
    return "checked: the artifact itself ran"


def _parity_lines(graph: dict[str, Any]) -> list[str]:
    lines = []
    for output, fig in graph["parity"]["outputs"].items():
        lines.append(f"    {output}: cosine mean {fig['cosine_mean']:.7f}, worst 1% {fig['cosine_worst_1pct']:.7f}, "
                     f"min {fig['cosine_min']:.7f}; max error {fig['max_abs_error']:.3g} (reference max "
                     f"{fig['max_abs_reference']:.3g})")
    instances = graph["parity"].get("instances")
    if isinstance(instances, dict) and "matched" in instances:
        lines.append(f"    instances at score {instances.get('threshold')}: {instances.get('reference_instances')} in the "
                     f"reference, {instances.get('candidate_instances')} here, {instances.get('matched')} matched, "
                     f"{instances.get('lost')} lost, {instances.get('gained')} gained")
    return lines


def describe_bundle(manifest: dict[str, Any], folder: str) -> list[str]:
    """The lines `litetext info` prints."""
    model, padding = manifest["model"], manifest["text_padding"]
    total = sum(g["bytes"] for g in manifest["graphs"].values())
    lines = [
        f"{folder}: {model.get('preset') or model.get('model_type')} ({model.get('family')}) for {manifest['target']}, "
        f"{manifest['precision']}, context {manifest['context_length']}, {padding['name']} padding "
        f"(pad id {padding['pad_id']}, {'masked' if padding['attention_masked'] else 'pads attended to'})",
        f"weights: {model['weights_label']}",
        f"made {manifest.get('created')} by litetext {manifest.get('tools', {}).get('litetext', '?')} in "
        f"{manifest.get('export_seconds', '?')} s; graphs {total / MIB:.1f} MiB in all",
    ]
    for name, graph in manifest["graphs"].items():
        gate = graph.get("tolerance", {}).get(manifest["precision"], {})
        lines += [
            "",
            f"{name}: {graph['file']}, {graph['bytes'] / MIB:.1f} MiB",
            f"  takes   {'; '.join(_shape(t) for t in graph['inputs'])}",
            f"  returns {'; '.join(_shape(t) for t in graph['outputs'])}",
            f"  parity against {graph['parity'].get('reference', 'the reference')}, measured with "
            f"{_parity_runtime(manifest, graph)}",
            f"  => {_verdict(manifest, graph)}:",
            *_parity_lines(graph),
        ]
        if gate:
            lines.append("  gate: " + ", ".join(f"{k} {v}" for k, v in gate.items() if v))
        calibration = graph.get("calibration")
        if calibration:
            kept = calibration.get("layers_kept_fp32_activations") or []
            lines.append(f"  calibrated: {calibration.get('method', '?')} on {calibration.get('calibration_prompts', '?')}"
                         " prompts"
                         + (f", {len(kept)} layers with fp32 activations (int8 weights)" if kept else ""))
    text_path = manifest.get("text_path") or {}
    if text_path.get("kind") not in (None, "text_encoder"):
        lines += ["", f"text path: {text_path['kind']} (see manifest.json text_path)"]
    data = manifest.get("parity_data") or {}
    lines += ["", f"parity data: {data.get('prompts', '?')} prompts"
              + (f", images {', '.join(data['images'])}" if data.get("images") else "")]
    if model["weights"].get("kind") == "random":
        lines.append("NOTE: random weights: the figures check the export, the outputs mean nothing")
    return lines


@click.command()
@click.argument("bundle", type=click.Path())
@friendly_errors
def info(bundle):
    """Print BUNDLE's manifest as a person reads it: graphs, sizes, precision, weights, parity figures, and which
    runtime measured them (what was checked, and what only simulated)."""
    from litetext.bundle import Bundle

    opened = Bundle.open(bundle)
    for line in describe_bundle(opened.manifest, str(bundle)):
        click.echo(line)

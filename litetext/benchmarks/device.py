"""The machine a benchmark ran on, recorded with every result so results from several devices can be merged."""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any


# Instruction-set flags that decide fp16 / int8 speed on CPUs.
SIMD_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
              "amx_bf16", "amx_int8", "asimd", "asimdhp", "asimddp")


def _cpuinfo() -> tuple[str, int | None, list[str]]:
    """CPU model name, physical core count and SIMD flags from /proc/cpuinfo (Linux); the model from
    platform elsewhere."""
    fallback = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            blocks = f.read().strip().split("\n\n")
    except OSError:
        return fallback, None, []
    model, cores, flags = None, set(), set()
    for block in blocks:  # one block per logical CPU
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        model = model or fields.get("model name")
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
        flags.update((fields.get("flags") or fields.get("Features") or "").split())
    return model or fallback, len(cores) or None, [f for f in SIMD_FLAGS if f in flags]


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


@cache
def device_info() -> dict[str, Any]:
    import torch

    from litetext.export.manifest import tool_versions

    model, physical, simd = _cpuinfo()
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except ImportError:
        providers = []
    accelerator = "none"
    if torch.cuda.is_available():
        accelerator = f"cuda: {torch.cuda.get_device_name(0)}"
    return {
        "cpu": model,
        "cpu_simd": simd,
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": physical,
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "accelerator": accelerator,
        "onnxruntime_providers": providers,
        "tools": tool_versions(),
    }


def short_name(device: dict[str, Any]) -> str:
    """A few words for plots and tables: the CPU (and accelerator when there is one)."""
    name = str(device.get("cpu", "?"))
    for noise in ("(R)", "(TM)", " CPU", " Processor"):
        name = name.replace(noise, "")
    name = " ".join(name.split())
    if device.get("accelerator", "none") != "none":
        name += f" + {device['accelerator']}"
    return name

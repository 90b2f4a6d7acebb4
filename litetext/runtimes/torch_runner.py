"""Eager PyTorch: the reference every exported graph is measured against, and what upstream runs."""

from __future__ import annotations

import numpy as np
import torch

from litetext.models.graphs import GraphSpec
from litetext.runtimes.base import Runner


class TorchRunner(Runner):
    runtime = "torch"

    def __init__(self, module: torch.nn.Module, spec: GraphSpec, device: str = "cpu"):
        super().__init__(spec, "fp32")
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)

    @torch.inference_mode()
    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device) for name in self.spec.input_names]
        out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().cpu().numpy() for o in out]

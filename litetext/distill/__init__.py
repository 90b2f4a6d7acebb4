"""Distil SAM3's text encoder (or a larger student) into a SAM3-LiteText student: `litetext distill`.

    from litetext.distill import DistillSettings, distill
    summary = distill(teacher, "out/s0", prompts, eval_prompts, student="litetext-s0",
                      settings=DistillSettings(steps=20000, batch=128))
"""

from litetext.distill.train import DistillSettings, distill, evaluate, read_log

__all__ = ["DistillSettings", "distill", "evaluate", "read_log"]

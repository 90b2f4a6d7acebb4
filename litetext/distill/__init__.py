"""Distil SAM3's text encoder (or a larger student) into a SAM3-LiteText student: `litetext distill`.

    from litetext.distill import DistillSettings, distill
    summary = distill(teacher, "out/s0", prompts, eval_prompts, student="litetext-s0",
                      settings=DistillSettings(steps=20000, batch=128))
"""

__all__ = ["DistillSettings", "distill", "evaluate", "read_log"]


def __getattr__(name: str):
    # Loaded on first use, so that the CLI's start (which imports litetext.distill.cli) does not import torch.
    if name in __all__:
        from litetext.distill import train

        return getattr(train, name)
    raise AttributeError(f"module 'litetext.distill' has no attribute {name!r}")

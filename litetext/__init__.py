"""litetext: take SAM3-LiteText (and the SAM3 teacher) to devices.

    import litetext
    loaded = litetext.load_model("litetext-s0", random_init=True, seed=0)   # or checkpoint="path"
    litetext.export_bundle(loaded, "out/s0", target="onnx")
    instances = litetext.predict("out/s0", "cat.jpg", "a cat")

Names load on first use, so `import litetext` (and the CLI's start) does not import torch.
"""

from importlib import import_module

from litetext.errors import LitetextError

_API = {
    "Bundle": "litetext.bundle",
    "Instance": "litetext.predict",
    "LoadedModel": "litetext.models.loading",
    "Predictor": "litetext.predict",
    "export_bundle": "litetext.export",
    "load_model": "litetext.models.loading",
    "predict": "litetext.predict",
}

__all__ = ["LitetextError", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'litetext' has no attribute {name!r}")

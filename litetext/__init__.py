"""litetext: take SAM3-LiteText (and the SAM3 teacher) to devices.

    import litetext
    loaded = litetext.load_model("litetext-s0", random_init=True, seed=0)   # or checkpoint="path"
    litetext.export_bundle(loaded, "out/s0", target="onnx")
    instances = litetext.predict("out/s0", "cat.jpg", "a cat")
"""

from litetext.errors import LitetextError
from litetext.export import export_bundle
from litetext.export.bundle import Bundle
from litetext.models.loading import LoadedModel, load_model
from litetext.predict import Instance, Predictor, predict

__all__ = ["Bundle", "Instance", "LitetextError", "LoadedModel", "Predictor", "export_bundle", "load_model", "predict"]

"""Export: a loaded model -> a checked bundle for one target (litetext.export.pipeline), with one module or
package per target (litetext.export.targets). This module only hands those names on."""

from litetext.export.pipeline import export_bundle
from litetext.export.targets import TARGETS, target_module

__all__ = ["TARGETS", "export_bundle", "target_module"]

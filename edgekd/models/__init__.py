"""Models: registered builders, ``torchvision:<name>``, ``timm:<name>`` and ``package.module:factory`` specs.

Every builder takes ``num_classes`` and ``in_channels`` (filled from the dataset unless the recipe sets them)
plus its own keyword ``args``. Add a model family with one module of ``@MODELS.register`` builders.
"""

from __future__ import annotations

from edgekd.registry import Registry

MODELS: Registry = Registry("model")

from edgekd.models import mobilenet_v2, resnet_cifar, unet  # noqa: E402,F401,I001  (registers)
from edgekd.models.build import build_model, check_model_name  # noqa: E402
from edgekd.models.checkpoint import load_checkpoint, load_weights  # noqa: E402

__all__ = ["MODELS", "build_model", "check_model_name", "load_checkpoint", "load_weights"]

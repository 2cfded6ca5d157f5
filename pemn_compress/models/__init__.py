"""The model zoo: a registry of named architectures that a `.pemn` file can rebuild safely.

``create_model(name, **kwargs)`` builds a registered model and stamps it with
``pemn_arch = {"name": name, "kwargs": {...}}`` (every factory argument, JSON values only);
``create_model(arch["name"], **arch["kwargs"])`` rebuilds the same architecture. Importing this
package imports every family module so that their models register.

Families (each with tiny ``test_*`` variants): ConvMixer, CIFAR ResNet, ViT, MLP.
"""

from __future__ import annotations

from . import convmixer, mlp, resnet, vit  # noqa: F401  (import registers the models)
from ._registry import arch_of, create_model, list_models, model_entrypoint, register_model

__all__ = ["arch_of", "create_model", "list_models", "model_entrypoint", "register_model"]

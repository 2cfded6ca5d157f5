"""The data sets ``get_dataset`` accepts, by name, and where each named set is looked for.

Torch-free (``data.py`` imports torch): the commands' ``--help`` texts are built from the same
definitions the loaders use, without importing torch.
"""

from __future__ import annotations

__all__ = ["DATASET_ENV", "DATASET_SPECS"]

# Accepted `get_dataset` specs, for help texts and error messages.
DATASET_SPECS = (
    "fashion-mnist (alias fmnist)",
    "mnist",
    "cifar10",
    "cifar100",
    "PATH.npz",
    "module:function",
)

# named data set -> the environment variable naming its folder when no root is given
DATASET_ENV = {
    "fashion-mnist": "PEMN_FASHION_MNIST_DIR",
    "mnist": "PEMN_MNIST_DIR",
    "cifar10": "PEMN_CIFAR10_DIR",
    "cifar100": "PEMN_CIFAR100_DIR",
}

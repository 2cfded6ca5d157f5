"""The curated public surface of ``import pemn_compress as pemn``: any drift must be deliberate."""

from __future__ import annotations

import subprocess
import sys

import pemn_compress as pemn

EXPECTED = [
    "Callback",
    "CheckpointError",
    "ChecksumError",
    "CompressOptions",
    "CompressResult",
    "ConfigError",
    "ContainerError",
    "DataError",
    "DataNotFoundError",
    "FormatError",
    "HeaderError",
    "LimitError",
    "MaskConfig",
    "Metric",
    "MissingKeyError",
    "ModelError",
    "PemnError",
    "ShapeError",
    "TrainConfig",
    "Trainer",
    "TrainingFailed",
    "TrainingInterrupted",
    "TrustError",
    "UnknownModelError",
    "UserCodeError",
    "VersionError",
    "__version__",
    "compress",
    "create_model",
    "evaluate",
    "get_dataset",
    "input_transform",
    "list_models",
    "load",
    "mask_",
    "masked_layers",
    "materialize",
    "read_pemn",
    "register_model",
    "save",
]


def test_all_is_sorted_and_exactly_the_curated_names():
    assert pemn.__all__ == sorted(pemn.__all__)
    assert pemn.__all__ == EXPECTED


def test_every_public_name_resolves():
    for name in pemn.__all__:
        assert getattr(pemn, name) is not None, name


def fresh_python(code: str) -> str:
    """What ``code`` prints in a fresh interpreter (nothing imported before it)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_is_lean_no_torch_until_needed_and_no_cuda_init():
    code = (
        "import sys, pemn_compress as pemn\n"
        "assert 'torch' not in sys.modules, 'import pemn_compress imported torch'\n"
        "pemn.mask_\n"
        "import torch\n"
        "assert not torch.cuda.is_initialized(), 'CUDA was initialized at import'\n"
        "print('ok')\n"
    )
    assert fresh_python(code) == "ok"


def test_compress_is_the_function_whatever_was_imported_first():
    # the pipeline module is not named `compress`: importing it (as the CLI does) must not shadow pemn.compress
    code = (
        "import pemn_compress.pipeline, pemn_compress.commands, pemn_compress.options\n"
        "import pemn_compress as pemn\n"
        "import inspect\n"
        "assert inspect.isfunction(pemn.compress), type(pemn.compress)\n"
        "print(list(inspect.signature(pemn.compress).parameters)[:3])\n"
    )
    assert fresh_python(code) == "['model', 'train', 'test']"

"""A user's own model, end to end, as a user types it: from a working folder holding their module.

The three routes (state dict + --arch module:Class, a module:function factory, a pickled module),
eval of every file, the __main__ pickle trap, the near-chance warning and the deployment input
transform. No test edits sys.path: the working folder is importable because the product makes it so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import pemn_compress as pemn
from pemn_compress.cli import cli
from pemn_compress.pipeline import CompressOptions, accuracy_warnings, compress

QUICK = ["--max-train-samples", "256", "--epochs", "1", "--batch-size", "64", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden, bias=False), nn.BatchNorm1d(hidden),
                                  nn.ReLU(), nn.Linear(hidden, 10, bias=False))

    def forward(self, x):
        return self.body(x)


def build(hidden=32):
    return Net(hidden)
"""


@pytest.fixture
def folder(tmp_path, monkeypatch, fmnist_subset, request):
    """The user's working folder with their module (a name of its own per test: imports are cached)."""
    monkeypatch.setenv("PEMN_FASHION_MNIST_DIR", str(fmnist_subset))
    monkeypatch.chdir(tmp_path)
    name = "usernet_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    (tmp_path / f"{name}.py").write_text(NET)
    yield tmp_path, name
    sys.modules.pop(name, None)


def pemn_cli(*args: str, expect: int | None = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def python(folder: Path, code: str) -> None:
    """Run ``python -c code`` in the folder, as the user saves a model (the folder is on its path)."""
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=folder, check=True, timeout=120,
                   capture_output=True, text=True)


def one_error_line(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len([line for line in lines if line.startswith("error: ")]) == 1 and lines[-1].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def eval_json(*args: str) -> dict:
    return json.loads(pemn_cli("eval", *args, "--json").stdout)


def test_state_dict_with_module_class(folder):
    path, mod = folder
    python(path, f"import torch, {mod}; torch.manual_seed(0); torch.save({mod}.Net().state_dict(), 'net.pt')")
    missing = pemn_cli("compress", "net.pt", *QUICK, expect=None)
    one_error_line(missing, "--arch", "module:Class")
    doc = json.loads(pemn_cli("compress", "net.pt", "--arch", f"{mod}:Net", *QUICK, "--json").stdout)
    assert doc["input_kind"] == "state_dict" and doc["dense_accuracy"] is not None
    assert doc["architecture"] == {"kind": "import", "target": f"{mod}:Net", "kwargs": {}}
    one_error_line(pemn_cli("eval", "net.pemn", expect=None), "--trust-code", "--arch")
    assert eval_json("net.pemn", "--trust-code")["accuracy"] == doc["accuracy"]
    assert eval_json("net.pemn", "--arch", f"{mod}:Net")["accuracy"] == doc["accuracy"]  # typed: no trust needed
    with pytest.raises(pemn.TrustError, match="trust_code=True"):  # the library names its argument
        pemn.load(path / "net.pemn", device="cpu")
    assert pemn.load(path / "net.pemn", device="cpu", trust_code=True).body[1].weight.shape == (32, 784)


def test_factory_with_kwargs_evaluates_from_the_same_folder(folder):
    path, mod = folder
    doc = json.loads(pemn_cli("compress", f"{mod}:build", "--arch-kwarg", "hidden=24", *QUICK, "--json").stdout)
    assert doc["architecture"] == {"kind": "import", "target": f"{mod}:build", "kwargs": {"hidden": 24}}
    assert eval_json("build.pemn", "--trust-code")["accuracy"] == doc["accuracy"]
    inspect = pemn_cli("inspect", "build.pemn").stdout
    assert "pemn eval build.pemn --trust-code" in " ".join(inspect.split())


def test_pickled_module_records_how_to_rebuild_it(folder):
    path, mod = folder
    python(path, f"""
        import torch, {mod}
        torch.manual_seed(0)
        torch.save({mod}.Net(), 'default.pt')      # Net() rebuilds it
        torch.save({mod}.Net(hidden=24), 'wide.pt')  # Net() does not: other shapes
    """)
    one_error_line(pemn_cli("compress", "default.pt", *QUICK, expect=None), "--allow-pickle", f"{mod}.Net")
    doc = json.loads(pemn_cli("compress", "default.pt", "--allow-pickle", *QUICK, "--json").stdout)
    assert doc["input_kind"] == "pickle"
    assert doc["architecture"] == {"kind": "import", "target": f"{mod}:Net", "kwargs": {}}
    assert eval_json("default.pemn", "--trust-code")["accuracy"] == doc["accuracy"]

    wide = pemn_cli("compress", "wide.pt", "--allow-pickle", *QUICK, "--json")
    doc = json.loads(wide.stdout)
    assert doc["architecture"] == {"kind": "none"}
    assert any("--arch" in w for w in doc["warnings"]) and "warning: the file records no architecture" in wide.stderr
    one_error_line(pemn_cli("eval", "wide.pemn", expect=None), "--arch")
    inspect = " ".join(pemn_cli("inspect", "wide.pemn").stdout.split())
    assert "pemn eval wide.pemn --arch module:Class" in inspect and "pemn.load('wide.pemn', model=" in inspect
    report = eval_json("wide.pemn", "--arch", f"{mod}:Net", "--arch-kwarg", "hidden=24")
    assert report["accuracy"] == doc["accuracy"] == report["recorded_accuracy"]


def test_class_defined_in_the_saving_script(folder):
    path, mod = folder
    (path / "save_main.py").write_text(NET + "\nimport torch\ntorch.manual_seed(0)\ntorch.save(Net(), 'main.pt')\n")
    python(path, "import runpy; runpy.run_path('save_main.py', run_name='__main__')")
    for flags in ([], ["--allow-pickle"]):
        line = one_error_line(pemn_cli("compress", "main.pt", *flags, *QUICK, expect=None))
        for fragment in ("pickled Net", "__main__", "move class Net into a module", "state_dict()", "--arch"):
            assert fragment in line, (fragment, line)
    with pytest.raises(pemn.ModelError, match=r'state_dict\(\).*arch="'):  # the library names its argument
        compress(CompressOptions(model="main.pt", allow_pickle=True, max_train_samples=256, epochs=1))
    doc = json.loads(pemn_cli("compress", "main.pt", "--allow-pickle", "--arch", f"{mod}:Net", *QUICK, "--json").stdout)
    assert doc["input_kind"] == "pickle" and doc["architecture"]["target"] == f"{mod}:Net"
    saved = torch.load(path / "main.pt", weights_only=False, pickle_module=_main_from(path / f"{mod}.py"))
    assert doc["dense_accuracy"] == pemn.evaluate(saved.eval(), _test_loader())[1]  # the pickled weights were read


def _main_from(source: Path):
    """A pickle stand-in reading __main__ names from the user's module file (independently of the product)."""
    import importlib.util
    import pickle
    import types

    spec = importlib.util.spec_from_file_location("user_module_copy", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shim = types.ModuleType("shim")
    shim.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")})

    class Unpickler(pickle.Unpickler):
        def find_class(self, module_name, name):
            return getattr(module, name) if module_name == "__main__" else super().find_class(module_name, name)

    shim.Unpickler = Unpickler
    return shim


def _test_loader():
    from pemn_compress.data import BatchLoader, get_dataset

    return BatchLoader.from_dataset(get_dataset("fashion-mnist"), "test", batch_size=500)


def test_near_chance_accuracy_warns_with_the_flags_that_help(folder):
    path, mod = folder
    data = pemn.get_dataset("fashion-mnist")
    rng = np.random.default_rng(0)  # real images, labels shuffled: nothing to learn, accuracy is chance
    np.savez(path / "shuffled.npz", x_train=data.x_train[:, 0], y_train=rng.permutation(data.y_train),
             x_test=data.x_test[:, 0], y_test=rng.permutation(data.y_test))
    result = pemn_cli("compress", f"{mod}:build", "--data", "shuffled.npz", *QUICK, "--json")
    doc = json.loads(result.stdout)
    assert doc["accuracy"] < 0.2
    assert len(doc["warnings"]) == 1 and "near chance (0.10 for 10 classes)" in doc["warnings"][0]
    assert "warning: accuracy" in result.stderr and "--epochs" in result.stderr


def test_accuracy_warning_thresholds():
    assert "near chance (0.10 for 10 classes)" in accuracy_warnings(0.19, None, 10)[0]
    assert accuracy_warnings(0.21, None, 10) == []
    assert "near chance (0.50 for 2 classes)" in accuracy_warnings(0.55, 0.9, 2)[0]
    assert "15.0 points below the dense input's 0.8500" in accuracy_warnings(0.70, 0.85, 10)[0]
    assert accuracy_warnings(0.80, 0.85, 10) == [] and accuracy_warnings(None, 0.85, 10) == []


def _idx(path: Path) -> np.ndarray:
    """Parse an IDX file by hand: magic (2 zero bytes, type 0x08, ndim), big-endian dims, uint8 data."""
    raw = path.read_bytes()
    assert raw[:3] == b"\x00\x00\x08"
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def test_input_transform_reproduces_eval_from_raw_idx_bytes(folder, fmnist_subset):
    path, mod = folder
    pemn_cli("compress", f"{mod}:build", *QUICK, "--quiet")
    recorded = eval_json("build.pemn", "--trust-code")["accuracy"]
    images, labels = _idx(fmnist_subset / "t10k-images-idx3-ubyte"), _idx(fmnist_subset / "t10k-labels-idx1-ubyte")
    model = pemn.load(path / "build.pemn", device="cpu", trust_code=True)
    for to_input in (pemn.input_transform(model), pemn.input_transform(path / "build.pemn")):
        with torch.no_grad():
            predicted = torch.cat([model(to_input(images[i:i + 500])).argmax(1) for i in range(0, len(images), 500)])
        assert (predicted.numpy() == labels).mean() == recorded
    transform = pemn.input_transform(model)
    assert transform(images[:3]).shape == (3, 1, 28, 28)
    with pytest.raises(pemn.ConfigError, match=r"trained on images of shape \(1, 28, 28\)"):
        transform(np.zeros((2, 32, 32), dtype=np.uint8))


def test_errors_name_flags_on_the_command_line_and_arguments_in_python(folder):
    line = one_error_line(pemn_cli("compress", "test_mlp", "--distill", *QUICK, expect=None), "use --no-distill")
    with pytest.raises(pemn.ConfigError) as info:
        compress(CompressOptions(model="test_mlp", distill=True, max_train_samples=256, epochs=1))
    assert "use distill=False" in str(info.value) and "--" not in str(info.value)
    assert line == "error: " + info.value.cli_message
    one_error_line(pemn_cli("compress", "test_mlp", "--strategy", "mp", "--ratio", "0.1", expect=None), "--ratio")
    with pytest.raises(pemn.ConfigError, match="^ratio applies to strategy 'rp' only"):
        CompressOptions(model="test_mlp", strategy="mp", ratio=0.1)

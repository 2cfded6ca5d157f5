"""Your data, in Python and on the command line: real Fashion-MNIST images written as image files in class
folders (the layout of torchvision's ``ImageFolder``) and read lazily by a user's own ``Dataset``, compressed
through ``pemn.compress`` and through ``pemn compress --data module:function``; errors in the user's data; a
user ``DataLoader``; exact ``--resume``; ``torchrun`` with a user ``Dataset``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import run_compress
from torch.utils.data import DataLoader

import pemn_compress as pemn
from pemn_compress.data import get_dataset
from pemn_compress.usercode import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A user's module, as they would write it: PGM image files (P5, 8-bit grey) in <split>/<class>/<n>.pgm, read one
# at a time; the pipeline's own transform (x / 255 - 0.5) / 0.5. `PEMN_TEST_BAD` makes one sample bad on purpose.
FOLDER_DATA = textwrap.dedent('''
    import os
    from pathlib import Path

    import numpy as np
    import torch
    from torch.utils.data import Dataset

    ROOT = Path(os.environ.get("FOLDER_DATA_ROOT", "images"))


    def read_pgm(path):
        raw = path.read_bytes()
        magic, width, height, maxval, pixels = raw.split(maxsplit=4)
        assert magic == b"P5" and maxval == b"255"
        return np.frombuffer(pixels, dtype=np.uint8).reshape(int(height), int(width))


    class FolderImages(Dataset):
        def __init__(self, folder):
            self.classes = sorted(p.name for p in Path(folder).iterdir())
            self.samples = [(f, k) for k, c in enumerate(self.classes) for f in sorted((Path(folder) / c).iterdir())]
            self.bad = os.environ.get("PEMN_TEST_BAD") if Path(folder).name == "train" else None
            self.reads = 0

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, i):
            path, label = self.samples[i]
            x = torch.from_numpy(read_pgm(path).astype(np.float32)).div_(255).sub_(0.5).div_(0.5)[None]  # (1, H, W)
            self.reads += 1
            kind, n = self.bad.split(":") if self.bad else ("", "0")
            if self.reads == int(n) or (kind == "shape" and self.reads >= int(n)):  # read n is in batch ceil(n / 64)
                if kind == "raise":
                    raise OSError(f"cannot read {path.name}: disk error")
                if kind == "nan":
                    x[0, 0, 0] = float("nan")
                if kind == "shape":
                    x = x[:, :20]
                if kind == "label":
                    label = 12
            return x, label


    def load():
        return FolderImages(ROOT / "train"), FolderImages(ROOT / "test")
''')
FLAGS = ["--epochs", "1", "--batch-size", "64", "--threads", "1", "--no-distill"]


def write_pgm(path, image: np.ndarray) -> None:
    path.write_bytes(b"P5\n%d %d\n255\n" % (image.shape[1], image.shape[0]) + image.tobytes())


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory):
    """256 training and 200 test images of the real Fashion-MNIST, as PGM files in class folders."""
    data = get_dataset("fashion-mnist").subset(256, 200, seed=0)
    root = tmp_path_factory.mktemp("folders") / "images"
    for split, xs, ys in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        for n, (x, y) in enumerate(zip(xs, ys, strict=True)):
            folder = root / split / f"class_{int(y)}"
            folder.mkdir(parents=True, exist_ok=True)
            write_pgm(folder / f"{n:05d}.pgm", x[0])
    return root


@pytest.fixture
def user_folder(image_folders, tmp_path, monkeypatch):
    """A working folder holding the user's module ``folder_data.py`` (importable from there, as for a user)."""
    (tmp_path / "folder_data.py").write_text(FOLDER_DATA)
    monkeypatch.setenv("FOLDER_DATA_ROOT", str(image_folders))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("folder_data", None)
    yield tmp_path
    sys.modules.pop("folder_data", None)


def user_data():
    """``folder_data.load()`` imported from the working folder, the way the CLI imports ``--data`` hooks."""
    return resolve("folder_data:load", role="data hook")()


def independent_accuracy(model: torch.nn.Module, dataset) -> float:
    """Accuracy by hand: the user's own DataLoader, argmax against the labels, no pemn code involved."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=len(dataset)):  # one batch: the same sums as a 500 batch
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    return correct / total


def test_library_and_cli_write_the_same_file_from_lazy_image_folders(user_folder):
    train, test = user_data()
    result = pemn.compress("test_mlp", train, test=test, output="lib.pemn", data="folder_data:load", epochs=1,
                           batch_size=64, threads=1, distill=False)
    assert result.output == "lib.pemn" and result.train_samples == 256 and result.test_samples == 200
    run_compress("test_mlp", "--data", "folder_data:load", "-o", "cli.pemn", *FLAGS)
    assert (user_folder / "lib.pemn").read_bytes() == (user_folder / "cli.pemn").read_bytes()

    deployed = pemn.load("cli.pemn", device="cpu")
    provenance = pemn.read_pemn("cli.pemn").header["provenance"]
    assert provenance["accuracy"] == independent_accuracy(deployed, test) == result.accuracy
    assert provenance["normalization"] == {"applied_by": "user"} and provenance["image_shape"] == [1, 28, 28]
    transform = pemn.input_transform(deployed)
    assert transform.applied_by == "user"
    with pytest.raises(pemn.ConfigError, match="your own pipeline"):
        transform(np.zeros((1, 28, 28), dtype=np.uint8))


def test_user_dataloader_resumes_exactly(user_folder):
    from support.faults import InterruptAfterSteps

    train, test = user_data()

    def loader():  # a fresh loader each run: shuffled by torch's RNG (no generator of its own)
        return DataLoader(train, batch_size=32, shuffle=True)

    options = dict(test=test, epochs=2, threads=1, distill=False, checkpoint_every=3)
    whole = pemn.compress("test_mlp", loader(), output="whole.pemn", **options)
    assert whole.steps == 16 and whole.options["batch_size"] == 32  # 256 / 32 per epoch, the loader's batch
    with pytest.raises(pemn.TrainingInterrupted):
        pemn.compress("test_mlp", loader(), output="cut.pemn", callbacks=[InterruptAfterSteps(11)], **options)
    resumed = pemn.compress("test_mlp", loader(), output="cut.pemn", resume=True, **options)
    assert resumed.steps == 16
    assert (user_folder / "cut.pemn").read_bytes() == (user_folder / "whole.pemn").read_bytes()

    own = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))
    with pytest.raises(pemn.TrainingInterrupted):
        pemn.compress("test_mlp", own, output="own.pemn", callbacks=[InterruptAfterSteps(3)], **options)
    with pytest.raises(pemn.CheckpointError, match="own generator"):
        pemn.compress("test_mlp", own, output="own.pemn", resume=True, **options)


@pytest.mark.parametrize("bad,expected", [
    ("raise:70", "training data, epoch 1, batch 2: reading it raised OSError: cannot read"),
    ("nan:130", "training data, epoch 1, batch 3: the inputs contain NaN"),
    ("shape:65", "training data, epoch 1, batch 2: inputs of shape (64, 1, 20, 28), expected (batch, 1, 28, 28)"),
    ("label:200", "training data, epoch 1, batch 4: labels must lie in [0, 10) (the model has 10 outputs), found"),
])  # fmt: skip
def test_errors_in_the_users_data_name_the_batch_and_keep_a_checkpoint(user_folder, monkeypatch, bad, expected):
    monkeypatch.setenv("PEMN_TEST_BAD", bad)
    result = run_compress("test_mlp", "--data", "folder_data:load", "-o", "bad.pemn", *FLAGS, expect=2)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    if bad.startswith(("raise", "nan")):  # found while training: the steps before it are kept
        assert "rerun with --resume" in result.stderr and (user_folder / "bad.pemn.ckpt").is_file()
        monkeypatch.delenv("PEMN_TEST_BAD")  # the user fixes the data
        run_compress("test_mlp", "--data", "folder_data:load", "-o", "bad.pemn", *FLAGS, "--resume")
        run_compress("test_mlp", "--data", "folder_data:load", "-o", "good.pemn", *FLAGS)
        assert (user_folder / "bad.pemn").read_bytes() == (user_folder / "good.pemn").read_bytes()


def test_an_empty_data_set_is_one_line(user_folder):
    (user_folder / "empty_data.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def load():\n    return TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)), None\n"
    )
    result = run_compress("test_mlp", "--data", "empty_data:load", *FLAGS, expect=2)
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "empty" in result.stderr


def test_arrays_and_a_module_in_python_record_the_measured_normalization(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = get_dataset("fashion-mnist").subset(256, 200, seed=1)
    torch.manual_seed(0)
    model = pemn.create_model("test_mlp")
    result = pemn.compress(model, (data.x_train, data.y_train), test=(data.x_test, data.y_test), output="arr.pemn",
                           epochs=1, batch_size=64, threads=1)
    assert result.input_kind == "module" and result.dataset == "arrays"  # the name recorded for arrays
    normalization = pemn.read_pemn("arr.pemn").header["provenance"]["normalization"]
    pixels = data.x_train.astype(np.float64)
    assert normalization["mean"] == [pytest.approx(pixels.mean(), rel=1e-12)]
    assert normalization["std"] == [pytest.approx(pixels.std(), rel=1e-12)]
    assert result.dense_accuracy is not None and result.distill is False  # an untrained module: near chance


DDP_HELPER = """
import json, os, sys
import torch
torch.set_num_threads(1)
import pemn_compress as pemn
import folder_data

train, test = folder_data.load()
result = pemn.compress("test_mlp", train, test=test, output="ddp.pemn", data="folder_data:load", epochs=1,
                       batch_size=64, threads=1, distill=False, device="cpu")
with open(f"rank{os.environ['RANK']}.json", "w") as fh:
    json.dump({"output": result.output, "steps": result.steps, "world_size": result.world_size}, fh)
"""


@pytest.mark.slow
def test_torchrun_with_a_user_dataset(user_folder):
    (user_folder / "helper.py").write_text(DDP_HELPER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(user_folder),
                                                                           os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "helper.py"]
    proc = subprocess.run(cmd, cwd=user_folder, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [json.loads((user_folder / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0] == {"output": "ddp.pemn", "steps": 4, "world_size": 2}  # 256 images, global batch 64
    assert reports[1] == {"output": None, "steps": 4, "world_size": 2}
    deployed = pemn.load(user_folder / "ddp.pemn", device="cpu")
    provenance = pemn.read_pemn(user_folder / "ddp.pemn").header["provenance"]
    assert provenance["recipe"]["world_size"] == 2
    assert provenance["accuracy"] == independent_accuracy(deployed, user_data()[1])
    assert sorted(p.name for p in user_folder.iterdir()) == ["ddp.pemn", "folder_data.py", "helper.py",
                                                             "rank0.json", "rank1.json"]


def test_distillation_from_a_trained_module_with_torch_data(user_folder):
    # a dense model trained by hand (plain SGD, a few steps): above chance, so by default it teaches the masks;
    # the user's samples carry no index the teacher's logits could be cached by: the teacher runs every step
    train, test = user_data()
    torch.manual_seed(0)
    dense = pemn.create_model("test_mlp")
    optimizer = torch.optim.SGD(dense.parameters(), lr=0.1)
    for x, y in DataLoader(train, batch_size=32, shuffle=True):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(dense(x), y).backward()
        optimizer.step()
    dense_accuracy = independent_accuracy(dense, test)
    assert dense_accuracy > 0.3  # chance is 0.1
    dense.train()

    taught = pemn.compress(dense, train, test=test, output="taught.pemn", epochs=1, batch_size=64, threads=1)
    assert taught.input_kind == "module" and taught.distill is True
    assert taught.dense_accuracy == dense_accuracy and not taught.warnings
    alone = pemn.compress(dense, train, test=test, output="alone.pemn", epochs=1, batch_size=64, threads=1,
                          distill=False)
    assert [h["train_loss"] for h in taught.history] != [h["train_loss"] for h in alone.history]
    assert pemn.read_pemn("taught.pemn").header["provenance"]["recipe"]["distill"] is True
    # the module handed in is left as it was: trainable, in training mode (it served as input and teacher)
    assert dense.training and all(p.requires_grad for p in dense.parameters())


def test_pemn_eval_follows_a_recorded_torch_data_hook(user_folder):
    from click.testing import CliRunner

    from pemn_compress.commands import eval_command

    run_compress("test_mlp", "--data", "folder_data:load", "-o", "hooked.pemn", *FLAGS)
    refused = CliRunner().invoke(eval_command, ["hooked.pemn"])  # the file names a hook: code runs only if trusted
    assert refused.exit_code == 2 and "--trust-code" in refused.stderr
    trusted = CliRunner().invoke(eval_command, ["hooked.pemn", "--trust-code", "--json"])
    assert trusted.exit_code == 0, trusted.stderr
    report = json.loads(trusted.stdout)
    assert report["samples"] == 200 and report["accuracy"] == report["recorded_accuracy"]
    assert report["accuracy"] == independent_accuracy(pemn.load("hooked.pemn", device="cpu"), user_data()[1])


def test_a_loaded_folded_model_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = get_dataset("fashion-mnist").subset(256, 100, seed=2)
    arrays = dict(test=(data.x_test, data.y_test), epochs=1, batch_size=64, threads=1)
    pemn.compress("test_mlp", (data.x_train, data.y_train), output="first.pemn", **arrays)
    loaded = pemn.load("first.pemn", device="cpu")  # BatchNorm folded into a scale and shift
    with pytest.raises(pemn.ModelError, match="folded"):
        pemn.compress(loaded, (data.x_train, data.y_train), output="again.pemn", **arrays)
    assert not (tmp_path / "again.pemn").exists() and not (tmp_path / "again.pemn.ckpt").exists()


def test_a_hook_returning_dataloaders_states_its_batch_size(user_folder):
    (user_folder / "loaders.py").write_text(
        "from torch.utils.data import DataLoader\nimport folder_data\n"
        "def load():\n    train, test = folder_data.load()\n"
        "    return DataLoader(train, batch_size=32, shuffle=True), DataLoader(test, batch_size=100)\n"
    )
    result = run_compress("test_mlp", "--data", "loaders:load", "-o", "l.pemn", *FLAGS, expect=2)  # FLAGS: 64
    assert "brings batches of 32" in result.stderr and "--batch-size 32" in result.stderr
    flags = [f if f != "64" else "32" for f in FLAGS]
    doc = json.loads(run_compress("test_mlp", "--data", "loaders:load", "-o", "l.pemn", *flags, "--json").stdout)
    assert doc["steps"] == 8 and doc["options"]["batch_size"] == 32  # 256 images in batches of 32


def test_training_data_without_a_test_split_writes_an_unmeasured_file(user_folder):
    (user_folder / "trainonly.py").write_text(
        "import folder_data\ndef load():\n    return folder_data.load()[0], None\n"
    )
    result = run_compress("test_mlp", "--data", "trainonly:load", "-o", "t.pemn", *FLAGS)  # the summary table
    assert "not measured (no test data)" in result.stdout and "256 train / ? test" in result.stdout
    provenance = pemn.read_pemn(user_folder / "t.pemn").header["provenance"]
    assert "accuracy" not in provenance and "evaluation" not in provenance
    pemn.load(user_folder / "t.pemn", device="cpu")

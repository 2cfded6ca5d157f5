"""`pemn compress` / `pemn eval` end to end, on a real Fashion-MNIST subset: every input kind, every
early error, --json, checkpoints and byte-identical resume, distillation, and a 2-process DDP run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import run_compress
from safetensors.torch import save as st_save
from safetensors.torch import save_file
from support.faults import InterruptAfterSteps

import pemn_compress as pemn
from pemn_compress import commands
from pemn_compress.checkpoints import CHECKPOINT_FORMAT
from pemn_compress.commands import compress, eval_command
from pemn_compress.data import DATASET_SPECS, BatchLoader, get_dataset
from pemn_compress.errors import ConfigError
from pemn_compress.inputs import strip_prefixes
from pemn_compress.pipeline import CompressOptions, TrainingInterrupted
from pemn_compress.pipeline import compress as compress_api
from pemn_compress.surgery import masked_layers
from pemn_compress.train import Callback, _unwrap

REPO = Path(__file__).resolve().parents[1]
# 256 training images, batch 64: 4 steps per epoch
QUICK = ["--max-train-samples", "256", "--epochs", "1", "--batch-size", "64", "--threads", "1"]
RESULT_KEYS = {
    "output", "input", "input_kind", "architecture", "dataset", "train_samples", "test_samples", "dense_accuracy",
    "accuracy", "file_bytes", "dense_fp32_bytes", "ratio", "steps", "epochs", "train_seconds", "seconds",
    "images_per_sec", "resumed", "distill", "device", "world_size", "rank", "options", "history", "warnings",
    "target", "metric_name", "metric", "dense_metric", "higher_is_better", "threads", "density_schedule", "allocation",
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def env(fmnist_cwd):
    return fmnist_cwd


run = run_compress


def run_json(*args: str) -> dict:
    return json.loads(run(*args, "--json").stdout)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()  # status lines may come first; the error is one line, last
    assert lines and lines[-1].startswith("error: ") and sum("error" in line for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def state_dict_of(name: str, seed: int = 1, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return pemn.create_model(name, **kwargs).state_dict()


def rgb32_npz(path: Path) -> Path:
    """The real subset as 3x32x32 images (padded, channels repeated): a CIFAR-shaped data set."""
    data = get_dataset("fashion-mnist").subset(512, 200, seed=0)

    def rgb(x):
        return np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)

    np.savez(path, x_train=rgb(data.x_train), y_train=data.y_train, x_test=rgb(data.x_test), y_test=data.y_test)
    return path


# ------------------------------------------------------------------------------------------------ inputs


def test_zoo_name_json_document_and_file(env):
    doc = run_json("test_mlp", *QUICK)
    assert set(doc) == RESULT_KEYS
    assert doc["output"] == "test_mlp.pemn" and doc["input_kind"] == "zoo"
    assert doc["dense_accuracy"] is None and doc["distill"] is False and doc["steps"] == 4
    assert doc["train_samples"] == 256 and doc["test_samples"] == 500
    path = env / "test_mlp.pemn"
    assert doc["file_bytes"] == path.stat().st_size
    model = pemn.load(path, device="cpu")
    dense_fp32 = len(st_save(model.state_dict()))  # what safetensors itself writes for the loaded model
    assert doc["dense_fp32_bytes"] == dense_fp32
    assert doc["ratio"] == pytest.approx(dense_fp32 / path.stat().st_size)  # both sizes measured, not the doc's
    assert not (env / "test_mlp.pemn.ckpt").exists()
    pf = pemn.read_pemn(path)
    prov = pf.header["provenance"]
    assert prov["dataset"] == "fashion-mnist" and prov["accuracy"] == doc["accuracy"]
    assert prov["recipe"]["strategy"] == "onelayer" and prov["recipe"]["max_train_samples"] == 256
    assert "output" not in prov["recipe"] and "resume" not in prov["recipe"]
    assert prov["recipe"]["fold_batchnorm"] is True and doc["target"] is None and "target" not in prov
    assert pf.header["dense"]["folded_batchnorm"] == ["body.1"]  # deploy-ready by default: the eval below reads it
    assert len(prov["normalization"]["mean"]) == 1
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)

    # pemn eval reproduces the recorded accuracy exactly (same split, normalization, batch size)
    result = CliRunner().invoke(eval_command, [str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["accuracy"] == report["recorded_accuracy"] == doc["accuracy"]
    assert report["samples"] == 500 and report["dataset"] == "fashion-mnist"
    text = CliRunner().invoke(eval_command, [str(path)])
    assert text.exit_code == 0 and "(same)" in text.stdout


def test_format_version_1_on_request_same_model_larger_header(env):
    run("test_mlp", *QUICK, "-o", "v2.pemn")
    run("test_mlp", *QUICK, "-o", "v1.pemn", "--format-version", "1")
    v1, v2 = pemn.read_pemn(env / "v1.pemn"), pemn.read_pemn(env / "v2.pemn")
    assert (v1.metadata["pemn.version"], v2.metadata["pemn.version"]) == ("1", "2")
    assert "pemn.header" in v1.metadata and "header" in v2.tensors and "header" not in v1.tensors
    assert v1.file_header.fingerprint == v2.file_header.fingerprint  # the same training, the same weights
    assert v1.header["provenance"]["recipe"]["format_version"] == 1
    assert (env / "v1.pemn").stat().st_size > (env / "v2.pemn").stat().st_size
    result = run("test_mlp", *QUICK, "--format-version", "4", expect=None)
    assert result.exit_code == 2 and "--format-version" in result.stderr


def test_state_dict_with_module_prefix_and_a_teacher_at_chance(env):
    # untrained weights (seeded initialization): their accuracy is near chance, so by default they teach nothing
    torch.save({f"module.{k}": v for k, v in state_dict_of("test_mlp").items()}, env / "model.pt")
    doc = run_json("model.pt", "--arch", "test_mlp", *QUICK)
    assert doc["input_kind"] == "state_dict" and doc["output"] == "model.pemn"
    # the dense accuracy is the given weights' accuracy on the same test split
    dense = pemn.create_model("test_mlp")
    dense.load_state_dict(state_dict_of("test_mlp"))
    data = get_dataset("fashion-mnist")
    test = BatchLoader.from_dataset(data, "test", batch_size=500)
    assert doc["dense_accuracy"] == pemn.evaluate(dense, test)[1] < 0.2  # chance 0.1, within the warning margin
    assert doc["distill"] is False
    assert any("near chance" in w and "--distill" in w for w in doc["warnings"]), doc["warnings"]
    prov = pemn.read_pemn(env / "model.pemn").header["provenance"]
    assert prov["dense_accuracy"] == doc["dense_accuracy"] and prov["recipe"]["distill"] is False

    forced = run_json("model.pt", "--arch", "test_mlp", "--distill", "-o", "forced.pemn", *QUICK)
    assert forced["distill"] is True and forced["dense_accuracy"] == doc["dense_accuracy"]
    assert any("as asked" in w for w in forced["warnings"]), forced["warnings"]
    assert (env / "forced.pemn").read_bytes() != (env / "model.pemn").read_bytes()  # the objective changed
    plain = run_json("model.pt", "--arch", "test_mlp", "--no-distill", "-o", "plain.pemn", *QUICK)
    assert plain["distill"] is False and not plain["warnings"]
    assert (env / "plain.pemn").read_bytes() == (env / "model.pemn").read_bytes()  # both trained without a teacher


def test_safetensors_input_fp16_leftovers_and_eval(env):
    save_file({f"_orig_mod.{k}": v for k, v in state_dict_of("test_convmixer").items()}, str(env / "cm.safetensors"))
    doc = run_json("cm.safetensors", "--arch", "test_convmixer", "--dense-dtype", "float16", "--strategy", "rp",
                   "--ratio", "0.01", "--no-distill", *QUICK)
    assert doc["input_kind"] == "safetensors" and doc["architecture"]["name"] == "test_convmixer"
    pf = pemn.read_pemn(env / "cm.pemn")
    assert pf.header["dense"]["dtype"] == "float16" and pf.config.strategy == "rp"
    report = json.loads(CliRunner().invoke(eval_command, ["cm.pemn", "--json"]).stdout)
    assert report["accuracy"] == doc["accuracy"]  # measured on the file as loaded, fp16 leftovers included


def test_factory_input_imports_user_code_from_the_current_folder(env, monkeypatch):
    (env / "userarch_factory.py").write_text(textwrap.dedent("""
        from torch import nn

        def build(hidden=16):
            return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden, bias=False), nn.BatchNorm1d(hidden),
                                 nn.ReLU(), nn.Linear(hidden, 10, bias=False))
    """))
    doc = run_json("userarch_factory:build", "--arch-kwarg", "hidden=24", *QUICK)
    assert doc["input_kind"] == "factory" and doc["output"] == "build.pemn" and doc["dense_accuracy"] is None
    assert doc["architecture"] == {"kind": "import", "target": "userarch_factory:build", "kwargs": {"hidden": 24}}
    with pytest.raises(pemn.TrustError):
        pemn.load(env / "build.pemn", device="cpu")
    model = pemn.load(env / "build.pemn", device="cpu", trust_code=True)  # the working folder is importable
    assert model[1].weight.shape == (24, 784)
    refused = CliRunner().invoke(eval_command, ["build.pemn"])
    assert_one_line_error(refused, "--trust-code")
    trusted = CliRunner().invoke(eval_command, ["build.pemn", "--trust-code", "--json"])
    assert json.loads(trusted.stdout)["accuracy"] == doc["accuracy"]


def test_pickled_module_needs_allow_pickle(env):
    torch.manual_seed(0)
    torch.save(pemn.create_model("test_mlp"), env / "whole.pt")
    refused = run("whole.pt", *QUICK, expect=None)
    assert_one_line_error(refused, "--allow-pickle", "pemn_compress.models.mlp.MLP")
    assert not (env / "whole.pemn").exists()
    doc = run_json("whole.pt", "--allow-pickle", "--no-distill", *QUICK)
    assert doc["input_kind"] == "pickle" and doc["dense_accuracy"] is not None
    assert doc["architecture"]["kind"] == "registry" and doc["architecture"]["name"] == "test_mlp"
    pemn.load(env / "whole.pemn", device="cpu")


def test_zoo_model_follows_the_data_shape(env):
    rgb32_npz(env / "rgb.npz")
    doc = run_json("test_convmixer", "--data", "rgb.npz", *QUICK)
    kwargs = doc["architecture"]["kwargs"]
    assert (kwargs["in_chans"], kwargs["img_size"], kwargs["num_classes"]) == (3, 32, 10)
    assert doc["test_samples"] == 200


def test_eval_never_follows_a_data_hook_named_by_the_file(env):
    torch.manual_seed(0)
    model = pemn.mask_(pemn.create_model("test_mlp"), pemn.MaskConfig())
    pemn.save(model, env / "hostile.pemn", provenance={"dataset": "os:system"})
    refused = CliRunner().invoke(eval_command, ["hostile.pemn"])
    assert_one_line_error(refused, "runs code", "--data")
    chosen = CliRunner().invoke(eval_command, ["hostile.pemn", "--data", "fashion-mnist", "--json"])
    assert chosen.exit_code == 0 and json.loads(chosen.stdout)["recorded_accuracy"] is None
    pemn.save(model, env / "ansi.pemn", provenance={"dataset": "x\x1b[31m"})
    escaped = CliRunner().invoke(eval_command, ["ansi.pemn"])
    assert_one_line_error(escaped, "unknown data set", "\\x1b[31m")
    assert "\x1b" not in escaped.stderr  # strings from a file never reach the terminal raw


def test_user_flow_from_the_dense_example(env):
    # examples/train_dense.py writes model.pt; `pemn compress model.pt --arch ...` takes it from there
    process_env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, str(REPO / "examples" / "train_dense.py"), "--model", "test_mlp", "--epochs", "1",
                    "--train-samples", "256", "--threads", "1"], cwd=env, env=process_env, check=True,
                   capture_output=True, text=True, timeout=120)
    doc = run_json("model.pt", "--arch", "test_mlp", "--strategy", "onelayer", "--data", "fashion-mnist", *QUICK)
    # measured 0.36 after 2 steps on the 500-image test split (chance: 0.10)
    assert doc["input_kind"] == "state_dict" and doc["dense_accuracy"] > 0.2 and doc["distill"] is True


# ------------------------------------------------------------------------------------------------ errors


def _missing_data_dir(env, monkeypatch):
    (env / "empty").mkdir()
    monkeypatch.setenv("PEMN_FASHION_MNIST_DIR", str(env / "empty"))
    return []


def _mlp_state_dict(env, monkeypatch, **kwargs):
    torch.save(state_dict_of("test_mlp", **kwargs), env / "mlp.pt")
    return []


def _rgb_data(env, monkeypatch):
    _mlp_state_dict(env, monkeypatch)
    rgb32_npz(env / "rgb.npz")
    return []


def _corrupt(env, monkeypatch):
    (env / "bad.pt").write_bytes(b"not a torch file")
    return []


def _unwritable(env, monkeypatch):
    folder = env / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return ["-o", "/sys/out.pemn" if os.geteuid() == 0 else str(folder / "out.pemn")]  # root writes anywhere else


ERROR_CASES = {
    "missing file": (["nope.pt"], None, ["nope.pt does not exist"]),
    "unknown zoo name": (["convmixr_64_4"], None, ["did you mean", "convmixer_64_4"]),
    "state dict without --arch": (["mlp.pt"], _mlp_state_dict, ["--arch"]),
    "wrong architecture": (["mlp.pt", "--arch", "test_convmixer"], _mlp_state_dict,
                           ["missing stem.0.weight", "unexpected body.0.weight"]),
    "layer shape mismatch": (["mlp.pt", "--arch", "test_mlp"], lambda e, m: _mlp_state_dict(e, m, hidden=48),
                             ["body.0.weight (file (48, 784), model (32, 784))"]),
    "corrupt state dict": (["bad.pt", "--arch", "test_mlp"], _corrupt, ["cannot read bad.pt"]),
    "data missing": (["test_mlp"], _missing_data_dir, ["dataset-fashion-mnist", "lacks"]),
    "data shape": (["mlp.pt", "--arch", "test_mlp", "--data", "rgb.npz"], _rgb_data, ["(3, 32, 32)", "784"]),
    "density": (["test_mlp", "--density", "1.5"], None, ["density must be in (0, 1]"]),
    "rp without ratio": (["test_mlp", "--strategy", "rp"], None, ["needs a ratio"]),
    "ratio out of range": (["test_mlp", "--strategy", "rp", "--ratio", "2"], None, ["ratio must be in (0, 1]"]),
    "ratio without rp": (["test_mlp", "--ratio", "0.1"], None, ["ratio applies to strategy 'rp' only"]),
    "output folder missing": (["test_mlp", "-o", "no/such/dir/x.pemn"], None, ["does not exist"]),
    "output folder unwritable": (["test_mlp"], _unwritable, ["cannot write to output folder"]),
    "distill without weights": (["test_mlp", "--distill"], None, ["--no-distill"]),
    "--arch with a zoo name": (["test_mlp", "--arch", "test_mlp"], None, ["drop --arch"]),
    "resume without checkpoint": (["test_mlp", "--resume"], None, ["no checkpoint at test_mlp.pemn.ckpt"]),
    "batch larger than data": (["test_mlp", "--max-train-samples", "32"], None, ["lower --batch-size"]),
}


if not torch.cuda.is_available():
    ERROR_CASES["cuda without a GPU"] = (["test_mlp", "--device", "cuda"], None, ["CUDA is not available"])


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_is_one_line_exit_2(case, env, monkeypatch):
    args, setup, fragments = ERROR_CASES[case]
    extra = setup(env, monkeypatch) if setup else []
    result = run(*args, *extra, "--epochs", "1", "--batch-size", "64", expect=None)
    assert_one_line_error(result, *fragments)
    assert not list(env.glob("*.pemn")) and not list(env.glob("*.ckpt"))


def test_json_errors_are_one_document(env, monkeypatch):
    result = run("test_mlp", "--density", "0", "--json", expect=2)
    assert json.loads(result.stdout)["error"]["type"] == "ConfigError"
    _missing_data_dir(env, monkeypatch)
    missing = run("test_mlp", "--json", expect=2)
    assert json.loads(missing.stdout)["error"]["type"] == "DataNotFoundError"


# ------------------------------------------------------------------------------------------------ resume

RESUME = ["test_mlp", "--max-train-samples", "256", "--epochs", "2", "--batch-size", "64", "--threads", "1", "--quiet"]
RESUME_OPTIONS = dict(model="test_mlp", max_train_samples=256, epochs=2, batch_size=64, threads=1)  # the same run


def interrupted(output: str, hook: InterruptAfterSteps, **options) -> TrainingInterrupted:
    """The RESUME run through the Python API, interrupted by ``hook`` (the command line has no such hook)."""
    with pytest.raises(TrainingInterrupted) as info:
        compress_api(CompressOptions(**RESUME_OPTIONS, output=output, **options), callbacks=[hook])
    return info.value


@pytest.fixture
def reference(env) -> bytes:
    run(*RESUME, "-o", "ref.pemn")
    return (env / "ref.pemn").read_bytes()


def test_interrupt_then_resume_is_byte_identical(env, reference):
    stopped = interrupted("out.pemn", InterruptAfterSteps(5), checkpoint_every=3)  # mid second epoch (4 steps each)
    assert (stopped.checkpoint, stopped.step) == ("out.pemn.ckpt", 5)
    assert not (env / "out.pemn").exists()
    state = torch.load(env / "out.pemn.ckpt", weights_only=True)  # plain tensors and containers only
    assert state["format"] == CHECKPOINT_FORMAT and state["trainer"]["step"] == 5

    again = run(*RESUME, "-o", "out.pemn", expect=None)  # forgetting --resume never overwrites it
    assert_one_line_error(again, "--resume")
    changed = run(*RESUME, "-o", "out.pemn", "--resume", "--lr", "0.05", expect=None)
    assert_one_line_error(changed, "other settings", "lr 0.01 -> 0.05")

    resumed = run(*RESUME, "-o", "out.pemn", "--resume", "--checkpoint-every", "0", "--threads", "1")
    assert (env / "out.pemn").read_bytes() == reference
    assert not (env / "out.pemn.ckpt").exists() and resumed.stderr == ""


@pytest.mark.parametrize("option,flag,message", [
    ("score_scale", ["--score-scale", "2"], "score_scale 1.0 -> 2.0"),
    ("density_schedule", ["--density-schedule", "anneal"], "density_schedule 'constant' -> 'anneal'"),
])  # fmt: skip
def test_a_checkpoint_older_than_an_option_resumes_at_its_default(env, reference, option, flag, message):
    interrupted("old.pemn", InterruptAfterSteps(5), checkpoint_every=0)
    state = torch.load(env / "old.pemn.ckpt", weights_only=True)
    del state["recipe"][option]  # what a checkpoint written before the option existed holds
    torch.save(state, env / "old.pemn.ckpt")
    refused = run(*RESUME, "-o", "old.pemn", "--resume", *flag, expect=None)
    assert_one_line_error(refused, "other settings", message)
    run(*RESUME, "-o", "old.pemn", "--resume")
    assert (env / "old.pemn").read_bytes() == reference


class InitialScores(Callback):
    def on_fit_start(self, trainer) -> None:
        self.scores = {name: layer.scores.detach().clone() for name, layer in masked_layers(_unwrap(trainer.model))}


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_score_scale_sets_the_initial_scores_bound(env, scale):
    seen = InitialScores()
    compress_api(CompressOptions(**RESUME_OPTIONS, score_scale=scale, output="s.pemn"), callbacks=[seen])
    for name, scores in seen.scores.items():  # test_mlp: Linear(784, 32) and Linear(32, 10)
        bound = scale / math.sqrt(scores.shape[1])  # Kaiming-uniform: +-scale / sqrt(fan_in)
        assert bound * 0.95 < float(scores.abs().max()) <= bound, name
        assert -bound <= float(scores.min()) < -0.95 * bound, name


def test_first_ctrl_c_finishes_the_batch_then_resume_is_byte_identical(env, reference):
    stopped = interrupted("sig.pemn", InterruptAfterSteps(3, signal=True), checkpoint_every=0)  # a real SIGINT
    assert (stopped.checkpoint, stopped.step) == ("sig.pemn.ckpt", 3)
    assert torch.load(env / "sig.pemn.ckpt", weights_only=True)["trainer"]["step"] == 3
    run(*RESUME, "-o", "sig.pemn", "--resume")
    assert (env / "sig.pemn").read_bytes() == reference


def test_crash_inside_a_step_keeps_the_last_consistent_checkpoint(env, monkeypatch):
    # the crash comes after the forward has updated BatchNorm statistics: that state must not be saved
    (env / "crashy_arch.py").write_text(textwrap.dedent("""
        import os
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
                                          nn.Linear(32, 10, bias=False))
                self.calls = 0

            def forward(self, x):
                out = self.body(x)
                if self.training:
                    self.calls += 1
                    if self.calls == int(os.environ.get("CRASH_AT_FORWARD", "0")):
                        raise RuntimeError("simulated crash inside a training step")
                return out

        def build():
            return Net()
    """))
    args = ["crashy_arch:build", "--max-train-samples", "256", "--epochs", "2", "--batch-size", "64", "--quiet",
            "--checkpoint-every", "2"]
    run(*args, "-o", "ref.pemn")
    monkeypatch.setenv("CRASH_AT_FORWARD", "4")
    crashed = run(*args, "-o", "out.pemn", expect=None)
    assert isinstance(crashed.exception, RuntimeError)
    assert "checkpoint saved to out.pemn.ckpt; rerun with --resume" in crashed.stderr
    assert torch.load(env / "out.pemn.ckpt", weights_only=True)["trainer"]["step"] == 2
    monkeypatch.delenv("CRASH_AT_FORWARD")
    run(*args, "-o", "out.pemn", "--resume")
    assert (env / "out.pemn").read_bytes() == (env / "ref.pemn").read_bytes()


# ------------------------------------------------------------------------------------------------ DDP

DDP_HELPER = """
import hashlib, json, os, sys
import torch
torch.set_num_threads(1)
from pemn_compress.pipeline import CompressOptions, compress

out, report_dir = sys.argv[1], sys.argv[2]
result = compress(CompressOptions(model="test_mlp", max_train_samples=256, epochs=1, batch_size=64, output=out,
                                  threads=1, device="cpu"))
digest = hashlib.sha256()
for key, value in sorted(result.model.state_dict().items()):
    digest.update(key.encode())
    digest.update(value.detach().cpu().contiguous().numpy().tobytes())
rank = os.environ["RANK"]
with open(os.path.join(report_dir, f"rank{rank}.json"), "w") as fh:
    json.dump({"hash": digest.hexdigest(), "result": result.to_dict()}, fh)
"""


@pytest.mark.slow
def test_two_process_ddp_with_gloo(env):
    (env / "helper.py").write_text(DDP_HELPER)
    process_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                       OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "helper.py", "ddp.pemn", str(env)]
    proc = subprocess.run(cmd, cwd=env, env=process_env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [json.loads((env / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["hash"] == reports[1]["hash"]  # identical scores and BatchNorm state on both ranks
    main, other = reports[0]["result"], reports[1]["result"]
    assert main["world_size"] == 2 and main["output"] == "ddp.pemn" and other["output"] is None
    assert main["steps"] == other["steps"] == 4  # 256 images, global batch 64: 32 per rank per step
    pf = pemn.read_pemn(env / "ddp.pemn")
    assert pf.header["provenance"]["recipe"]["world_size"] == 2
    pemn.load(env / "ddp.pemn", device="cpu")
    assert not (env / "ddp.pemn.ckpt").exists()


# ------------------------------------------------------------------------------------------------ units


def test_strip_prefixes():
    t = torch.zeros(1)
    assert strip_prefixes({"module.a.w": t, "module.b": t}) == {"a.w": t, "b": t}
    assert strip_prefixes({"_orig_mod.module.a": t}) == {"a": t}
    assert strip_prefixes({"enc._orig_mod.w": t, "head.w": t}) == {"enc.w": t, "head.w": t}
    assert strip_prefixes({"module.a": t, "b": t}) == {"module.a": t, "b": t}  # not every key: a real name


ACCENTED_ARCH = """
from torch import nn


def build():
    model = nn.Sequential()
    model.add_module("entrée", nn.Flatten())
    model.add_module("couche_cachée", nn.Linear(784, 16))
    model.add_module("normalisée", nn.BatchNorm1d(16))
    model.add_module("ρ", nn.ReLU())
    model.add_module("sortie", nn.Linear(16, 10))
    return model
"""


@pytest.mark.parametrize("model,output", [("test_convmixer", "test_convmixer.pemn"), ("accents:build", "build.pemn")])
def test_dense_fp32_size_is_the_real_safetensors_file_size(env, model, output):
    # non-ASCII layer names take more bytes in the header than characters: safetensors writes them as UTF-8
    (env / "accents.py").write_text(ACCENTED_ARCH, encoding="utf-8")
    doc = run_json(model, *QUICK)
    loaded = pemn.load(env / output, device="cpu", trust_code=True).state_dict()
    assert model == "test_convmixer" or any(not key.isascii() for key in loaded)
    save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in loaded.items()}, "dense.st")
    assert doc["dense_fp32_bytes"] == os.path.getsize("dense.st")
    assert doc["ratio"] == pytest.approx(doc["dense_fp32_bytes"] / os.path.getsize(output))


def test_options_validate_and_round_trip():
    options = CompressOptions(model="test_mlp", strategy="rp", ratio=1e-3, arch_kwargs={"hidden": 8})
    assert CompressOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    for bad in (dict(epochs=0), dict(lr=-1.0), dict(device="tpu"), dict(dense_dtype="int4"), dict(density=0.0),
                dict(dense_dtype="int8", format_version=1),
                dict(distill_alpha=0.0), dict(checkpoint_every=-1), dict(arch_kwargs={"x": object()}),
                dict(batch_size=True)):
        with pytest.raises(ConfigError):
            CompressOptions(model="test_mlp", **bad)
    with pytest.raises(ConfigError, match="unknown option"):
        CompressOptions.from_dict({"model": "test_mlp", "epoch": 3})


def test_help_and_lean_import():
    help_text = " ".join(CliRunner().invoke(compress, ["--help"]).stdout.split())
    assert "This runs code from the file; only for files you trust" in help_text
    assert "--resume" in help_text and "fashion-mnist (alias fmnist), mnist, cifar10" in help_text
    assert ", ".join(DATASET_SPECS) in help_text  # every data set get_dataset accepts
    group = click.Group("pemn", commands=[compress, eval_command])  # how the pemn group attaches them
    assert sorted(group.commands) == ["compress", "eval"] and commands.eval is eval_command
    result = CliRunner().invoke(group, ["compress", "test_mlp", "--density", "2"])
    assert_one_line_error(result, "density")
    code = "import sys, pemn_compress.commands; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))

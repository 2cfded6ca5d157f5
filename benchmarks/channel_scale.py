"""Learned scales on masked weights, measured before the file format gets a field for them (issue 13).

The question: does a learned multiplier per output channel of every masked layer (``weight = scale_c *
value * mask``, a few bytes per channel in a file) train more accurate masks? On the paper-class model
(``convmixer_192_6_p4``) a BatchNorm follows each masked conv, but only after GELU, so it cannot absorb
such a scale; on a conv followed directly by BatchNorm the scale would be absorbed exactly and could not
help. The scale costs 2 bytes (fp16) per output channel: 13 x 192 + 10 channels, 5,012 B on this model,
20% of a ``--target-ratio 40`` file; so it is worth building into the format only if it wins clearly at
the same density, before its bytes are counted.

The cheap variant, one learned scale per masked layer (2 bytes each: 28 B on this model), is measured
the same way (``--variants``).

Method: the masked model of ``pemn compress`` (its mask and training recipe, ``CompressOptions``
defaults) at ``--density`` (default 0.0887: what ``--target-ratio 40`` chooses on this model, from the
full-data report), trained once as is and once with a learned scale per output channel (initialized to
1, no weight decay, the masks' optimizer and schedule), seed by seed, paired. The scale multiplies each
masked layer's output channel (a forward hook: for a layer without bias exactly the weight's scale).
Accuracy: the trained model in memory on the full test set (no file: the format has no field for the
scale; it gets one only if the scale wins).

    nice python benchmarks/channel_scale.py --resume          # 60,000 images, 3 epochs, seeds 0-2: about 2.5 h
    python benchmarks/channel_scale.py --quick --out /tmp/cs    # test_convmixer, 1000/500 images: seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _harness as h
import torch
from torch import nn

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.pipeline import CompressOptions
from pemn_compress.train import evaluate

# variant -> what the learned scale multiplies: nothing, each output channel, or each whole masked layer
VARIANTS = {"masks only": None, "masks + per-channel scale": "channel", "masks + per-layer scale": "layer"}
BASE = "masks only"
FIELDS = ["variant", "seed", "epochs", "density", "accuracy", "scale_params", "scale_moved", "train_seconds"]


def attach_scales(model: nn.Module, per: str = "channel") -> int:
    """A learned scale (initialized to 1) on every output channel (``per="channel"``) or on the whole output
    (``"layer"``) of every masked layer, applied by a forward hook; each is its layer's parameter
    ``learned_scale``, so the trainer's optimizer finds it. Returns how many scales there are."""
    count = 0
    for _, layer in pemn.masked_layers(model):
        size = layer.source.shape[0] if per == "channel" else 1
        layer.register_parameter("learned_scale", nn.Parameter(torch.ones(size)))

        def hook(module, inputs, output):
            return output * module.learned_scale.view(1, -1, *([1] * (output.ndim - 2)))

        layer.register_forward_hook(hook)
        count += size
    return count


def learned_scales(model: nn.Module) -> list[torch.Tensor]:
    return [layer.learned_scale for _, layer in pemn.masked_layers(model) if hasattr(layer, "learned_scale")]


def one_run(args, data, variant: str, seed: int) -> dict:
    options = CompressOptions(model=args.model, epochs=args.epochs, seed=seed, density=args.density)
    torch.manual_seed(seed)
    model = pemn.create_model(args.model, **h.model_kwargs(data))
    pemn.mask_(model, options.mask_config())
    per = VARIANTS[variant]
    extra = attach_scales(model, per) if per else 0
    loader = BatchLoader.from_dataset(data, "train", batch_size=options.batch_size, shuffle=True, seed=seed,
                                      drop_last=True)  # the defaults: no augmentation
    started = time.perf_counter()
    pemn.Trainer(model, loader, None, options.train_config(), device="cpu").fit()
    seconds = time.perf_counter() - started
    test = BatchLoader.from_dataset(data, "test", batch_size=500)
    accuracy = evaluate(model, test, "cpu")[1]
    scales = [p.detach() for p in learned_scales(model)]
    moved = float(torch.cat(scales).sub(1).abs().mean()) if scales else 0.0  # mean |scale - 1|: it trained
    return {"variant": variant, "seed": seed, "epochs": args.epochs, "density": args.density, "accuracy": accuracy,
            "scale_params": extra, "scale_moved": f"{moved:.4g}", "train_seconds": round(seconds, 1)}  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    return h.read_rows(path, ints=("seed",), floats=("accuracy",))


def job_id(row: dict) -> str:
    return f"{row['variant']}|{row['seed']}"


def render(csv_path: Path, command: str, setup: str) -> Path:
    rows = read_rows(csv_path)
    acc = {(r["variant"], r["seed"]): 100 * r["accuracy"] for r in rows}
    seeds = sorted({s for v, s in acc if v == BASE})
    ran = [v for v in VARIANTS if any((v, s) in acc for s in seeds)]
    lines = [f"# Learned scales on the masks: {setup.split(',')[0]}", "", f"Command: `{command}`", "",
             f"Setup: {setup}", "", "| variant | " + " | ".join(f"seed {s} %" for s in seeds) + " |",
             "|---|" + "---:|" * len(seeds)]  # fmt: skip
    for v in ran:
        lines.append(f"| {v} | " + " | ".join(f"{acc[(v, s)]:.2f}" if (v, s) in acc else "-" for s in seeds) + " |")
    lines.append("")
    for v in ran[1:]:
        points = {s: acc[(v, s)] for s in seeds if (v, s) in acc}
        deltas = h.paired(points, {s: acc[(BASE, s)] for s in seeds}, scale=1.0)  # already in points
        verdict = h.verdict(list(deltas.values()), otherwise="no better on every seed")
        lines.append(f"- {v} against {BASE}: {h.mean_sd(deltas.values(), signed=True)} points over {len(deltas)} "
                     f"seed(s), paired ({h.per_seed(deltas)}): {verdict}, before counting the scales' bytes.")
    return h.write_text(csv_path.with_suffix(".md"), lines)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convmixer_192_6_p4", help="zoo model")
    parser.add_argument("--data", default="fashion-mnist", help="dataset spec (see `pemn compress --help`)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--density", type=float, default=0.0887, help="masks' density (--target-ratio 40's)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(h.RESULTS))
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the CSV")
    parser.add_argument("--quick", action="store_true", help="test_convmixer, 1000/500 images, 2 epochs, density 0.5")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",")]
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    torch.set_num_threads(args.threads)
    data = get_dataset(args.data)
    if args.quick:
        args.model, args.epochs, args.density = "test_convmixer", 2, 0.5
        data = data.subset(1000, 500, seed=0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"channel_scale{'_quick' if args.quick else ''}_{args.data}_{args.model}_cpu"
    csv_path = out / f"{name}.csv"
    done = h.start_csv(csv_path, FIELDS, args.resume, job_id)
    for seed in (int(s) for s in args.seeds.split(",")):
        for variant in [v for v in VARIANTS if v in variants]:
            if job_id({"variant": variant, "seed": seed}) in done:
                continue
            row = one_run(args, data, variant, seed)
            h.append_rows(csv_path, FIELDS, [row])
            print(f"{variant:<28} seed {seed}: {100 * row['accuracy']:.2f}% ({row['train_seconds']} s)", flush=True)
    d = CompressOptions(model=args.model)
    setup = (f"{args.model}, {data.num_train:,} training / {data.num_test:,} test images of {args.data}, "
             f"{args.epochs} epochs, density {args.density:g}, the recipe of `pemn compress` ({d.distribution} "
             f"values, {d.optimizer} lr {d.lr:g}, {d.schedule}, batch {d.batch_size}, weight decay "
             f"{d.weight_decay:g}); {h.environment(args.threads, 'cpu')}; {h.today()}")  # fmt: skip
    return render(csv_path, h.recorded_command("channel_scale.py", argv, skip={"--resume"}), setup)


if __name__ == "__main__":
    main()

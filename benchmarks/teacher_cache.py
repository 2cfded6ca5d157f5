"""Distillation with the teacher's logits cached once against a teacher pass at every step, side by side.

When the training loader does not augment (the default of ``pemn compress`` since the recipe
benchmark), every training image reaches the teacher the same way every epoch, so ``Trainer``
computes the teacher's logits of all training images once and looks them up
(``TrainConfig.cache_teacher``, on by default). This measures what that saves: the same masked student
(onelayer, the defaults' mask) distilled from its dense model on real Fashion-MNIST images, once with
the cache and once with the teacher run at every step, both for ``--epochs`` epochs; the two take
turns for ``--rounds`` rounds so that machine noise hits both alike. Reported: the median wall time of
``fit()`` (the cache's one pass included), the ratio, and the largest difference between the two runs'
per-epoch training losses (float noise: the cached logits are the teacher's, computed in batches of
the same size). Writes ``benchmarks/results/teacher_cache_cpu.md``.

    python benchmarks/teacher_cache.py                    # convmixer_192_6_p4, 5,120 images, 3 epochs, 3 rounds
    python benchmarks/teacher_cache.py --quick --out /tmp/tc
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import _harness as h
import torch

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset


def one_fit(args, data, cache: bool) -> tuple[float, list[float]]:
    torch.manual_seed(0)
    kwargs = {"in_chans": data.in_chans, "num_classes": data.num_classes}
    teacher = pemn.create_model(args.model, **kwargs)  # a dense model: random weights cost what trained ones do
    student = pemn.mask_(pemn.create_model(args.model, **kwargs), pemn.MaskConfig(seed=0))
    train = BatchLoader.from_dataset(data, "train", batch_size=128, shuffle=True, seed=0, drop_last=True)
    config = pemn.TrainConfig(epochs=args.epochs, distill_alpha=0.5, cache_teacher=cache)
    trainer = pemn.Trainer(student, train, None, config, teacher=teacher, device="cpu")
    started = time.perf_counter()
    result = trainer.fit()
    return time.perf_counter() - started, [m.train_loss for m in result.history]


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convmixer_192_6_p4", help="zoo model (teacher and student)")
    parser.add_argument("--train-samples", type=int, default=5120)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(h.RESULTS))
    parser.add_argument("--quick", action="store_true", help="test_convmixer, 512 images, 2 epochs, 1 round")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python benchmarks/teacher_cache.py", *argv])
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.train_samples, args.epochs, args.rounds = "test_convmixer", 512, 2, 1
    torch.set_num_threads(args.threads)
    data = get_dataset("fashion-mnist").subset(args.train_samples, 100, seed=0)
    times: dict[bool, list[float]] = {True: [], False: []}
    losses: dict[bool, list[float]] = {}
    for r in range(args.rounds):
        for cache in (False, True):
            seconds, losses[cache] = one_fit(args, data, cache)
            times[cache].append(seconds)
            print(f"round {r + 1}: {'cached logits' if cache else 'teacher every step'}: {seconds:.1f} s", flush=True)
    live, cached = statistics.median(times[False]), statistics.median(times[True])
    drift = max(abs(a - b) for a, b in zip(losses[True], losses[False], strict=True))
    lines = [
        "# Distillation: teacher logits cached once vs a teacher pass every step (cpu)",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: {args.model} as teacher (dense) and student (onelayer masks, density 0.5), distillation alpha 0.5, "
        f"{data.num_train:,} Fashion-MNIST training images, batches of 128, no augmentation, {args.epochs} epochs per "
        f"fit, {args.rounds} rounds alternating the two; {h.environment(args.threads)}, {h.load_average()}; "
        f"{h.today()}.",
        "",
        "| teacher | fit s (median) | per round s | speed-up |",
        "|---|---:|---|---:|",
        f"| every step | {live:.1f} | {', '.join(f'{t:.1f}' for t in times[False])} | 1.00x |",
        f"| cached once | {cached:.1f} | {', '.join(f'{t:.1f}' for t in times[True])} | {live / cached:.2f}x |",
        "",
        f"Largest difference between the two runs' per-epoch training losses: {drift:.2e} "
        f"(losses {', '.join(f'{v:.4f}' for v in losses[True])} cached).",
    ]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return h.write_text(Path(args.out) / f"teacher_cache{'_quick' if args.quick else ''}_cpu.md", lines)


if __name__ == "__main__":
    main()

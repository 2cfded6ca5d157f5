"""Bounded memory: `pemn.compress` on a disk-backed torch Dataset several times larger than the memory the run
may grow by, peak RSS reported against the data set's size.

The data set is the real Fashion-MNIST training set, stored as float32 images in one file and copied as many
times as ``--copies`` asks (each copy shifted one pixel further, so no two samples repeat), read one sample at a
time with ``os.pread`` by a user-style ``Dataset`` (the page cache holds the file, not the process). The run
trains ``test_mlp`` for one epoch over all of it and measures the test split of the real set; it happens in a
fresh process, whose peak resident memory (``ru_maxrss``) is compared with its resident memory right before
``pemn.compress`` was called.

    python benchmarks/streaming_memory.py                     # 8 copies: 480,000 images, 1.5 GB on disk
    python benchmarks/streaming_memory.py --copies 2 --out /tmp/mem   # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _harness

IMAGE = (1, 28, 28)
IMAGE_BYTES = 4 * 28 * 28
GOAL = 4.0  # the data set at least this many times the memory the run grows by

CHILD = r'''
import json, os, sys
import numpy as np, torch
from torch.utils.data import Dataset
import pemn_compress as pemn
import pemn_compress.pipeline  # the code the run needs, imported before the baseline: code is not data
from pemn_compress.data import get_dataset

class DiskImages(Dataset):
    """float32 (1, 28, 28) images in one file, read one at a time; labels in memory (8 bytes each)."""
    def __init__(self, path, labels):
        self.fd, self.labels, self.classes = os.open(path, os.O_RDONLY), torch.as_tensor(labels), list(range(10))
    def __len__(self):
        return len(self.labels)
    def __getitem__(self, i):
        raw = os.pread(self.fd, 3136, 3136 * i)
        return torch.from_numpy(np.frombuffer(raw, dtype=np.float32).reshape(1, 28, 28).copy()), self.labels[i]

path, labels_path, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
data = get_dataset("fashion-mnist")
test = torch.utils.data.TensorDataset(torch.from_numpy(data.x_test).float().div(255), torch.from_numpy(data.y_test))
train = DiskImages(path, np.load(labels_path))
del data
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
import threading
before, peak, done = rss(), [0], threading.Event()
def watch():  # the resident memory of the run, sampled every 20 ms (ru_maxrss would include set-up peaks)
    while not done.wait(0.02):
        peak[0] = max(peak[0], rss())
watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
result = pemn.compress("test_mlp", train, test=test, output=out, data="fashion-mnist-disk", epochs=1,
                       batch_size=256, threads=threads, distill=False)
done.set()
watcher.join()
print(json.dumps({"before": before, "peak": max(peak[0], rss()), "accuracy": result.accuracy,
                  "samples": result.train_samples, "seconds": result.seconds, "file_bytes": result.file_bytes}))
'''


def write_disk_set(folder: Path, copies: int) -> tuple[Path, Path, int]:
    """The training images, ``copies`` times (copy k rolled k pixels right), as float32 in one file."""
    import numpy as np

    from pemn_compress.data import get_dataset

    data = get_dataset("fashion-mnist")
    images = data.x_train.astype(np.float32) / 255  # (60000, 1, 28, 28)
    path, labels = folder / "images.f32", folder / "labels.npy"
    with open(path, "wb") as fh:
        for k in range(copies):
            fh.write(np.roll(images, k, axis=3).tobytes())
    np.save(labels, np.tile(data.y_train, copies))
    return path, labels, copies * len(images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=8, help="copies of the 60,000 training images on disk")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=_harness.RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        images, labels, samples = write_disk_set(Path(tmp), args.copies)
        size = images.stat().st_size
        proc = subprocess.run([sys.executable, "-c", CHILD, str(images), str(labels), str(Path(tmp) / "m.pemn"),
                               str(args.threads)], stdout=subprocess.PIPE, text=True, check=True)
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = run["peak"] - run["before"]
    ratio = size / grown
    status = "met" if ratio >= GOAL else f"missed by {100 * (1 - ratio / GOAL):.0f}%"
    mib = 1 << 20
    lines = [
        "# Bounded memory: compressing from a disk-backed Dataset", "",
        f"Command: `{_harness.recorded_command('streaming_memory.py', argv or sys.argv[1:])}`", "",
        f"Setup: test_mlp, 1 epoch, batch 256, Fashion-MNIST training images x {args.copies} (each copy shifted one "
        f"pixel) as float32 on disk, read one sample at a time by a user Dataset (os.pread); "
        f"{_harness.environment(args.threads, 'cpu')}; {_harness.today()}.", "",
        "| data set on disk | samples | RSS before compress | peak RSS | grown by | data set / growth | goal (>= 4x) "
        "| accuracy | time |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        f"| {size / mib:,.0f} MiB | {samples:,} | {run['before'] / mib:,.0f} MiB | {run['peak'] / mib:,.0f} MiB | "
        f"{grown / mib:,.0f} MiB | {ratio:.1f}x | {status} | {run['accuracy']:.4f} | {run['seconds']:.0f} s |",
    ]
    _harness.write_text(args.out / "streaming_memory_cpu.md", lines)
    print("\n".join(lines[-3:]))


if __name__ == "__main__":
    main()

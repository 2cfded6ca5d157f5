"""The main job in one call: a zoo model compressed on Fashion-MNIST with the tool's measured defaults, the
`.pemn` file loaded back as a plain model, and its accuracy checked against what the file records.

    python examples/quickstart.py                         # convmixer_64_4, 3 epochs, a few minutes on 2 cores
    python examples/quickstart.py --epochs 1 --train-samples 10000 --threads 1

Everything `pemn compress` does is `pemn.compress(...)` here: the same options, the same defaults.
"""

from __future__ import annotations

import argparse

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convmixer_64_4", help="zoo model name (see pemn_compress.list_models())")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training set (the tool's default: 10)")
    parser.add_argument("--train-samples", type=int, default=None, help="a class-stratified training subset")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the cores other programs leave free; pemn says when it chose "
                             "fewer)")
    parser.add_argument("--out", default="quickstart.pemn")
    args = parser.parse_args()

    # 1. compress: masks over fixed pseudo-random weights, trained on Fashion-MNIST (Debian package
    #    dataset-fashion-mnist), written, loaded back and measured, with the CLI's defaults
    result = pemn.compress(args.model, "fashion-mnist", output=args.out, epochs=args.epochs,
                           max_train_samples=args.train_samples, threads=args.threads, progress=True)
    print(f"{result.output}: {result.file_bytes:,} bytes on disk, {result.ratio:.1f}x smaller than the dense fp32 "
          f"safetensors file ({result.dense_fp32_bytes:,} bytes); accuracy {result.accuracy:.4f}; density "
          f"{result.density:g}")

    # 2. deploy: weights regenerated bit-exactly from the seed (load verifies their fingerprint), a plain
    #    dense model, fed the inputs the way training normalized them
    model = pemn.load(result.output, device="auto")
    to_input = pemn.input_transform(model)
    data = get_dataset("fashion-mnist")
    test = BatchLoader(data.x_test, data.y_test, batch_size=500, mean=to_input.mean, std=to_input.std)
    _, accuracy = pemn.evaluate(model, test)
    print(f"loaded back on {next(model.parameters()).device}: accuracy {accuracy:.4f} (recorded {result.accuracy:.4f})")
    if accuracy != result.accuracy:
        raise SystemExit("the loaded model does not reproduce the accuracy recorded in the file")


if __name__ == "__main__":
    main()

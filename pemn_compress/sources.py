"""Where the compress pipeline's batches come from: arrays, or the user's own torch data, behind one interface.

``resolve_data(train, test, ...)`` turns what a user hands ``pemn.compress`` (or ``--data``) into a
``DataSource``:

* ``ArraySource``: an ``ArrayDataset`` (a named set, an ``.npz``, a hook returning arrays, or
  ``(x, y)`` arrays): normalized by the tool with the training split's per-channel mean/std (recorded in
  the file), shuffled by seed, optionally augmented, teacher logits cached (``data.BatchLoader``).
* ``TorchSource``: a ``torch.utils.data.Dataset`` (map-style or iterable) or ``DataLoader`` per split.
  The user's pipeline owns the transforms and the normalization (the file records that it was
  "applied by your pipeline"). Nothing is materialized: batches are read as training goes, so a data
  set larger than memory trains with memory bounded by the batch, the model and the optimizer state.

  - a map-style ``Dataset``: batches of ``batch_size // world_size`` in a seeded order
    (``data.epoch_indices``, the order arrays get), each torchrun rank its own share; a resumed run
    continues mid-epoch without reading the batches it already trained on;
  - a ``DataLoader``: used as it is (its batch size, workers, collate). Each epoch's order is made a
    function of ``(seed, epoch)``: ``set_epoch`` for a sampler that has it (``DistributedSampler``),
    else the iterator is created under a torch RNG seeded by ``(seed, epoch)`` (a ``RandomSampler``
    without its own generator draws its order from it). A loader with its own ``generator`` cannot be
    replayed, so ``--resume`` refuses it. Under torchrun a loader without a ``DistributedSampler`` is
    rebuilt around one;
  - an ``IterableDataset``: batched by ``batch_size``; it must have ``__len__`` (the schedule needs the
    steps); resumable when it has ``set_epoch``.

Every batch of a torch source is checked as it arrives (``CheckedLoader``): an error in the user's data
(a loader that raises, a wrong shape, NaN, labels out of range, an empty epoch) is a ``DataError`` naming
the split, epoch and batch and what was expected, raised between two optimizer steps so the pipeline
keeps a checkpoint to resume from once the data is fixed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from ._terminal import one_line
from .data import ArrayDataset, BatchLoader, _derive_seed, _from_hook_result, epoch_indices, get_dataset
from .errors import ConfigError, DataError, worded
from .usercode import call_reference, is_reference

__all__ = ["ArraySource", "CheckedLoader", "DataSource", "TorchSource", "is_torch_data", "resolve_data"]

_EPOCH_STREAM = 0x4550  # "EP": the torch RNG a user DataLoader's epoch iterator is created under
USER_NORMALIZATION = {"applied_by": "user"}  # provenance.normalization of data the user's pipeline normalized


def is_torch_data(obj: Any) -> bool:
    """A torch ``Dataset`` or ``DataLoader``."""
    return isinstance(obj, (Dataset, DataLoader))


class DataSource:
    """What the pipeline needs from data, whatever its kind (see the module docstring)."""

    name: str
    kind: str  # "arrays" | "torch"
    num_train: int | None  # training samples (None: unknown)
    num_test: int | None
    num_classes: int | None  # None: unknown (classification checks labels against the model's outputs)

    def probe(self) -> torch.Tensor:
        """A small real input batch, for the dummy forward that checks the data fits the model."""
        raise NotImplementedError

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One input's shape, past the batch dimension ((C, H, W) for images)."""
        return tuple(int(d) for d in self.probe().shape[1:])

    def zoo_kwargs(self) -> dict:
        """The zoo arguments that follow the data: in_chans, num_classes, img_size (square images)."""
        raise NotImplementedError

    def train_loader(self, *, batch_size: int, seed: int, augment: bool, rank: int, world_size: int,
                     device: torch.device) -> Any:
        """This rank's loader: ``batch_size`` is the global batch (split across the ``world_size`` ranks)."""
        raise NotImplementedError

    def test_loader(self, *, batch_size: int, device: torch.device) -> Any | None:
        raise NotImplementedError

    def provenance(self) -> dict:
        """normalization, image/input shape, class count and sample counts, for the file's provenance."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class ArraySource(DataSource):
    """An ``ArrayDataset``: normalized by its mean/std, batches from ``BatchLoader``."""

    data: ArrayDataset
    full_train: int | None = None  # training images before a --max-train-samples subset

    kind = "arrays"

    def __post_init__(self) -> None:
        self.name = self.data.name
        self.num_train, self.num_test = self.data.num_train, self.data.num_test
        self.num_classes = self.data.num_classes

    def probe(self) -> torch.Tensor:
        return torch.zeros((2, *self.data.image_shape))  # (B, C, H, W)

    def zoo_kwargs(self) -> dict:
        height, width = self.data.img_size
        kwargs = {"in_chans": self.data.in_chans, "num_classes": self.data.num_classes}
        return kwargs | ({"img_size": height} if height == width else {})

    def train_loader(self, *, batch_size, seed, augment, rank, world_size, device):
        data = self.data
        return BatchLoader.from_dataset(
            data, "train", batch_size=batch_size // world_size, shuffle=True, seed=seed,
            crop_padding=data.suggested_crop_padding if augment else 0, hflip=augment,
            drop_last=True, rank=rank, world_size=world_size, device=device,
        )  # fmt: skip

    def test_loader(self, *, batch_size, device):
        return BatchLoader.from_dataset(self.data, "test", batch_size=batch_size, device=device)

    def provenance(self) -> dict:
        mean, std = self.data.mean or (), self.data.std or ()
        return {"normalization": {"mean": list(mean), "std": list(std)}, "image_shape": list(self.data.image_shape),
                "num_classes": self.data.num_classes, "train_samples": self.data.num_train}

    def describe(self) -> str:
        full = self.full_train if self.full_train is not None else self.num_train
        of = f" (of {full:,})" if full != self.num_train else ""
        d = self.data
        return (f"data {self.name}: {d.num_train:,} training images{of}, {d.num_test:,} test images "
                f"{d.image_shape}, {d.num_classes} classes")


# ----------------------------------------------------------------------------------------------
# torch data


class _SeededBatches:
    """The batch sampler of a map-style Dataset: this rank's share of a seeded epoch order, from ``start``."""

    def __init__(self, n: int, *, batch_size: int, seed: int, rank: int, world_size: int, shuffle: bool,
                 drop_last: bool):
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch, self.start = 0, 0

    def indices(self) -> torch.Tensor:
        return epoch_indices(self.n, epoch=self.epoch, shuffle=self.shuffle, seed=self.seed, rank=self.rank,
                             world_size=self.world_size, batch_size=self.batch_size, drop_last=self.drop_last)

    def __len__(self) -> int:
        return math.ceil(len(self.indices()) / self.batch_size) if self.n else 0

    def __iter__(self) -> Iterator[list[int]]:
        idx = self.indices().tolist()
        for i in range(self.start, len(self)):
            yield idx[i * self.batch_size : (i + 1) * self.batch_size]


class _DatasetLoader:
    """Batches of a map-style ``Dataset`` in a seeded, sharded order; ``batches_from(k)`` skips without reading."""

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, rank: int, world_size: int, shuffle: bool,
                 drop_last: bool):
        self.sampler = _SeededBatches(len(dataset), batch_size=batch_size, seed=seed, rank=rank,  # type: ignore[arg-type]
                                      world_size=world_size, shuffle=shuffle, drop_last=drop_last)
        self.loader = DataLoader(dataset, batch_sampler=self.sampler)
        self.batch_size = batch_size
        self.replayable = True

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        return self.batches_from(0)

    def batches_from(self, start: int) -> Iterator[Any]:
        self.sampler.start = int(start)
        try:
            yield from self.loader
        finally:
            self.sampler.start = 0


class _UserLoader:
    """A user's ``DataLoader`` (or an ``IterableDataset`` batched by us) whose epoch order is seeded."""

    def __init__(self, loader: DataLoader, *, seed: int):
        self.loader, self.seed, self.epoch = loader, seed, 0
        self.batch_size = loader.batch_size
        sampler = getattr(loader, "sampler", None)
        iterable = isinstance(loader.dataset, IterableDataset)
        own_generator = loader.generator is not None or getattr(sampler, "generator", None) is not None
        self.replayable = not own_generator and (not iterable or hasattr(loader.dataset, "set_epoch"))
        self.why_not_replayable = (
            "it draws its order from its own generator (DataLoader(generator=...) or a sampler's generator)"
            if own_generator else "it is an IterableDataset without set_epoch(epoch)"
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for holder in (getattr(self.loader, "sampler", None), getattr(self.loader, "batch_sampler", None),
                       self.loader.dataset):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(self.epoch)  # type: ignore[union-attr]

    def __len__(self) -> int:
        try:
            return len(self.loader)
        except TypeError:
            raise worded(
                ConfigError,
                "the training data has no length (an IterableDataset without __len__): the learning-rate schedule "
                "needs the number of steps; give the dataset a __len__",
            ) from None

    def __iter__(self) -> Iterator[Any]:
        return self.batches_from(0)

    def batches_from(self, start: int) -> Iterator[Any]:
        # the first batch is fetched under the seeded RNG too: a single-process RandomSampler draws its order then
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derive_seed(self.seed, self.epoch, _EPOCH_STREAM))
            iterator = iter(self.loader)
            head = [item for _, item in zip(range(start + 1), iterator, strict=False)]
        yield from head[start:]
        yield from iterator


def _as_loader(obj: Any, *, batch_size: int, what: str) -> DataLoader:
    if isinstance(obj, DataLoader):
        return obj
    if isinstance(obj, Dataset):
        return DataLoader(obj, batch_size=batch_size)
    raise worded(ConfigError, f"{what} must be a torch Dataset or DataLoader, found {type(obj).__name__}")


def _dataset_classes(obj: Any) -> int | None:
    """The class count a torchvision-style data set declares (``classes`` or ``targets``), else None."""
    dataset = obj.dataset if isinstance(obj, DataLoader) else obj
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, Sequence) and not isinstance(classes, (str, bytes)) and len(classes):
        return len(classes)
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        try:
            return int(torch.as_tensor(targets).max()) + 1
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def _length(obj: Any) -> int | None:
    dataset = obj.dataset if isinstance(obj, DataLoader) else obj
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def _split_inputs(batch: Any, where: str) -> tuple[Any, Any]:
    if isinstance(batch, Mapping) or not isinstance(batch, (tuple, list)) or len(batch) != 2:
        found = f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise DataError(f"{where}: expected an (input, target) pair, found {found}")
    return batch[0], batch[1]


class TorchSource(DataSource):
    """The user's torch ``Dataset``/``DataLoader`` objects for the train and (optional) test splits."""

    kind = "torch"

    def __init__(self, train: Any, test: Any | None, *, name: str):
        self.train, self.test, self.name = train, test, name
        self.num_train, self.num_test = _length(train), (_length(test) if test is not None else None)
        self.num_classes = _dataset_classes(train)
        self._probe: torch.Tensor | None = None

    def probe(self) -> torch.Tensor:
        if self._probe is None:
            source = self.test if self.test is not None else self.train
            loader = _as_loader(source, batch_size=2, what="the data")
            try:
                batch = next(iter(loader))
            except StopIteration:
                raise DataError(f"{self.name}: the {'test' if self.test is not None else 'training'} data is "
                                "empty") from None
            except Exception as exc:  # noqa: BLE001 - whatever the user's data raises
                raise DataError(f"{self.name}: reading the first batch raised {one_line(exc, 200)}") from exc
            x, _ = _split_inputs(batch, f"{self.name}, first batch")
            if not isinstance(x, torch.Tensor):
                raise DataError(f"{self.name}: inputs must be tensors, found {type(x).__name__}")
            self._probe = x[:2]
        return self._probe

    def zoo_kwargs(self) -> dict:
        shape = self.sample_shape
        kwargs: dict[str, Any] = {"num_classes": self.num_classes} if self.num_classes else {}
        if len(shape) == 3:
            kwargs["in_chans"] = shape[0]
            if shape[1] == shape[2]:
                kwargs["img_size"] = shape[1]
        return kwargs

    def train_loader(self, *, batch_size, seed, augment, rank, world_size, device):
        if augment:
            raise worded(ConfigError, "--augment applies to array data; augment torch data in your own Dataset's "
                                      "transform")
        train = self.train
        if isinstance(train, Dataset) and not isinstance(train, IterableDataset):
            return _DatasetLoader(train, batch_size=batch_size // world_size, seed=seed, rank=rank,
                                  world_size=world_size, shuffle=True, drop_last=True)
        loader = _as_loader(train, batch_size=batch_size // world_size, what="the training data")
        if world_size > 1:
            loader = _distributed(loader, seed=seed, rank=rank, world_size=world_size)
        return _UserLoader(loader, seed=seed)

    def test_loader(self, *, batch_size, device):
        if self.test is None:
            return None
        return _as_loader(self.test, batch_size=batch_size, what="the test data")

    def provenance(self) -> dict:
        shape = list(self.sample_shape)
        record: dict[str, Any] = {"normalization": dict(USER_NORMALIZATION)}
        record["image_shape" if len(shape) == 3 else "input_shape"] = shape
        if self.num_classes is not None:
            record["num_classes"] = self.num_classes
        if self.num_train is not None:
            record["train_samples"] = self.num_train
        return record

    def describe(self) -> str:
        count = lambda n: "an unknown number of" if n is None else f"{n:,}"  # noqa: E731
        test = "no test data" if self.test is None else f"{count(self.num_test)} test samples"
        return (f"data {self.name}: {count(self.num_train)} training samples, {test}, inputs "
                f"{self.sample_shape} (your pipeline's transforms and normalization)")


def _distributed(loader: DataLoader, *, seed: int, rank: int, world_size: int) -> DataLoader:
    """``loader`` rebuilt around a ``DistributedSampler`` (this rank's share), unless it has one."""
    if isinstance(loader.sampler, DistributedSampler) or isinstance(loader.dataset, IterableDataset):
        if isinstance(loader.dataset, IterableDataset):
            raise worded(ConfigError, "under torchrun an IterableDataset must shard itself: pass a Dataset, or a "
                                      "DataLoader with a DistributedSampler")
        return loader
    shuffle = not isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    sampler: DistributedSampler = DistributedSampler(loader.dataset, num_replicas=world_size, rank=rank,
                                                     shuffle=shuffle, seed=seed, drop_last=True)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=loader.worker_init_fn)


# ----------------------------------------------------------------------------------------------
# checked batches


class CheckedLoader:
    """A loader whose batches are checked as they arrive; errors are ``DataError`` naming split, epoch, batch.

    ``sample_shape``: every input's shape past the batch dimension; ``num_outputs``: classification labels
    must be integers in ``[0, num_outputs)`` (None: not classification, targets unchecked).
    """

    def __init__(self, loader: Any, *, what: str, sample_shape: tuple[int, ...], num_outputs: int | None):
        self.loader, self.what, self.sample_shape, self.num_outputs = loader, what, sample_shape, num_outputs
        self.epoch = 0
        self.batch_size = getattr(loader, "batch_size", None)
        self.replayable = getattr(loader, "replayable", True)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self.batches_from(0)

    def batches_from(self, start: int) -> Iterator[tuple[Any, Any]]:
        source = self.loader.batches_from(start) if hasattr(self.loader, "batches_from") else iter(self.loader)
        if not hasattr(self.loader, "batches_from"):
            source = (item for i, item in enumerate(source) if i >= start)
        index = start
        while True:
            where = f"{self.what}, epoch {self.epoch + 1}, batch {index + 1}"
            try:
                batch = next(source)
            except StopIteration:
                if index == 0:
                    raise DataError(f"{self.what}: epoch {self.epoch + 1} yielded no batch (an empty data set, or a "
                                    "batch size larger than it with drop_last)") from None
                return
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever the user's loader raises
                raise DataError(f"{where}: reading it raised {type(exc).__name__}: {one_line(exc, 240)}") from exc
            yield self._check(batch, where)
            index += 1

    def _check(self, batch: Any, where: str) -> tuple[Any, Any]:
        x, y = _split_inputs(batch, where)
        if not isinstance(x, torch.Tensor):
            raise DataError(f"{where}: inputs must be a tensor, found {type(x).__name__}")
        if tuple(x.shape[1:]) != self.sample_shape:
            raise DataError(f"{where}: inputs of shape {tuple(x.shape)}, expected (batch, "
                            f"{', '.join(map(str, self.sample_shape))}) like the first batch")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise DataError(f"{where}: the inputs contain NaN or infinity")
        if self.num_outputs is not None:
            _check_labels(y, len(x), self.num_outputs, where)
        return x, y


def _check_labels(y: Any, n: int, classes: int, where: str) -> None:
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != n:
        found = f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"{where}: expected one integer class label per input ({n},), found {found}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"{where}: expected integer class labels, found {y.dtype}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(f"{where}: labels must lie in [0, {classes}) (the model has {classes} outputs), found "
                        f"{int(y.min())}..{int(y.max())}")


# ----------------------------------------------------------------------------------------------
# resolution


def _arrays(train: Any, test: Any, name: str) -> ArrayDataset:
    pairs = []
    for what, split in (("train", train), ("test", test)):
        if not (isinstance(split, (tuple, list)) and len(split) == 2):
            raise ConfigError(f"{what} as arrays is an (x, y) pair of arrays, found {type(split).__name__}")
        pairs.append(split)
    (x_train, y_train), (x_test, y_test) = pairs
    return ArrayDataset(x_train, y_train, x_test, y_test, name=name)


def _hook(spec: str, root: str | None, name: str) -> DataSource:
    """``--data module:function``: arrays (see ``data.load_hook``) or torch data, ``(train, test)`` or a dict."""
    result = call_reference(spec, *(() if root is None else (root,)), role="data hook")
    if isinstance(result, Mapping) and "train" in result and is_torch_data(result["train"]):
        return TorchSource(result["train"], result.get("test"), name=name)
    if isinstance(result, (tuple, list)) and len(result) == 2 and is_torch_data(result[0]):
        return TorchSource(result[0], result[1], name=name)
    return ArraySource(_from_hook_result(result, spec))


def resolve_data(train: Any, test: Any, *, spec: str, root: str | None, max_train_samples: int | None,
                 seed: int) -> DataSource:
    """A ``DataSource`` from ``pemn.compress``'s ``train``/``test`` (None: the data set named ``spec``)."""
    if train is None:
        if test is not None:
            raise ConfigError("test= was given without train=: pass both, or neither to use data=")
        source = _hook(spec, root, spec) if is_reference(spec) else ArraySource(get_dataset(spec, root))
    elif isinstance(train, ArrayDataset):
        source = ArraySource(train)
    elif isinstance(train, str):
        return resolve_data(None, None, spec=train, root=root, max_train_samples=max_train_samples, seed=seed)
    elif is_torch_data(train):
        if test is not None and not is_torch_data(test):
            raise ConfigError(f"test= must be torch data like train=, found {type(test).__name__}")
        source = TorchSource(train, test, name=spec)
    elif isinstance(train, (tuple, list)) and len(train) == 2 and isinstance(train[0], (np.ndarray, torch.Tensor)):
        if test is None:
            raise ConfigError("array data needs test=(x_test, y_test) too: the file records its test accuracy")
        source = ArraySource(_arrays(train, test, spec))
    else:
        raise ConfigError(
            "train= is a torch Dataset or DataLoader, an (x, y) pair of arrays, an ArrayDataset, or the name of a "
            f"data set; found {type(train).__name__}"
        )
    if max_train_samples is not None:
        if not isinstance(source, ArraySource):
            raise worded(ConfigError, "--max-train-samples applies to array data; pass a torch Subset of your "
                                      "Dataset instead")
        if max_train_samples < source.data.num_train:
            full = source.data.num_train
            source = ArraySource(source.data.subset(max_train_samples, None, seed=seed), full_train=full)
    return source

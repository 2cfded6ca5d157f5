"""The mask trainer on real Fashion-MNIST subsets: learning, determinism, resume, distillation, callbacks."""

from __future__ import annotations

import copy

import pytest
import torch

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.errors import CheckpointError, ConfigError
from pemn_compress.tasks import make_task
from pemn_compress.train import Callback, TrainConfig, Trainer


@pytest.fixture(scope="module")
def fmnist():
    return get_dataset("fashion-mnist").subset(2000, 500, seed=0)


def loaders(data, batch_size=64, n_train=None):
    if n_train is not None:
        data = data.subset(n_train, None, seed=1)
    train = BatchLoader.from_dataset(data, "train", batch_size=batch_size, shuffle=True, seed=3, drop_last=True,
                                     crop_padding=2, hflip=True)
    test = BatchLoader.from_dataset(data, "test", batch_size=500)
    return train, test


def masked_mlp(strategy="onelayer", seed=0, **kw):
    torch.manual_seed(seed)
    model = pemn.create_model("test_mlp", in_chans=1, num_classes=10)
    return pemn.mask_(model, pemn.MaskConfig(strategy=strategy, seed=seed, **kw))


@pytest.mark.slow
def test_masks_over_random_weights_learn_real_data(fmnist):
    # measured: 0.81 after 300 steps (chance is 0.10); the threshold leaves room for platform noise
    model = masked_mlp()
    frozen = {name: layer.weight.clone() for name, layer in pemn.masked_layers(model)}
    train, test = loaders(fmnist)
    result = Trainer(model, train, test, TrainConfig(epochs=20, lr=0.02, max_steps=300)).fit()
    assert result.steps == 300
    assert result.final_acc > 0.65
    for name, layer in pemn.masked_layers(model):  # the random weights never changed
        assert torch.equal(layer.weight, frozen[name])


def test_rp_single_vector_learns(fmnist):
    model = masked_mlp("rp", ratio=1e-2)
    train, test = loaders(fmnist)
    result = Trainer(model, train, test, TrainConfig(epochs=20, lr=0.02, max_steps=150)).fit()
    assert model.pemn_plan.unique_values < 300
    assert result.final_acc > 0.5


def test_same_seed_same_result_and_resume_matches_uninterrupted(fmnist):
    cfg = TrainConfig(epochs=3, lr=0.02, seed=5)
    train, test = loaders(fmnist, n_train=640)

    straight = masked_mlp()
    full = Trainer(straight, train, test, cfg).fit()

    interrupted = masked_mlp()
    trainer = Trainer(interrupted, train, test, cfg)

    class StopMidEpoch(Callback):
        def on_batch_end(self, trainer, batch, loss, correct, size):
            if trainer.step == 14:  # mid second epoch (10 batches per epoch)
                trainer.stop_requested = True

    trainer.callbacks.append(StopMidEpoch())
    trainer.fit()
    assert trainer.step == 14 and trainer.epoch == 1
    state = copy.deepcopy(trainer.state_dict())

    resumed_model = masked_mlp()
    resumed = Trainer(resumed_model, train, test, cfg)
    resumed.load_state_dict(state)
    result = resumed.fit()

    assert result.steps == full.steps == 30
    # both from masked_mlp(): the same layers
    for (name, a), (_, b) in zip(pemn.masked_layers(straight), pemn.masked_layers(resumed_model), strict=True):
        assert torch.equal(a.scores, b.scores), name
    assert [m.eval_acc for m in result.history] == [m.eval_acc for m in full.history]


def test_checkpoint_with_other_settings_is_refused(fmnist):
    train, test = loaders(fmnist, n_train=256)
    trainer = Trainer(masked_mlp(), train, test, TrainConfig(epochs=1, lr=0.02))
    state = trainer.state_dict()
    other = Trainer(masked_mlp(), train, test, TrainConfig(epochs=1, lr=0.05))
    with pytest.raises(CheckpointError, match="lr"):
        other.load_state_dict(state)
    with pytest.raises(CheckpointError):
        trainer.load_state_dict({"config": state["config"]})


def test_distillation_changes_the_objective(fmnist):
    train, test = loaders(fmnist, n_train=256)
    torch.manual_seed(0)
    teacher = pemn.create_model("test_mlp", in_chans=1, num_classes=10)
    with pytest.raises(ConfigError, match="class logits"):  # a custom loss has no logits to distil
        Trainer(masked_mlp(), train, test, TrainConfig(), teacher=teacher,
                task=make_task(torch.nn.functional.mse_loss, ("mse", torch.nn.functional.mse_loss, False)))
    plain = Trainer(masked_mlp(), train, test, TrainConfig(epochs=1, lr=0.02)).fit()
    distilled_model = masked_mlp()
    distilled = Trainer(distilled_model, train, test, TrainConfig(epochs=1, lr=0.02, distill_alpha=0.7),
                        teacher=teacher).fit()
    assert distilled.history[0].train_loss != pytest.approx(plain.history[0].train_loss)
    assert not any(p.requires_grad for p in teacher.parameters())  # the teacher is frozen


def test_callbacks_see_every_batch_and_epoch(fmnist):
    train, test = loaders(fmnist, n_train=320)
    seen = {"batches": 0, "epochs": [], "fit_end": None}

    class Spy(Callback):
        def on_batch_end(self, trainer, batch, loss, correct, size):
            seen["batches"] += 1
            assert size == 64 and 0 <= correct <= size and loss > 0

        def on_epoch_end(self, trainer, metrics):
            seen["epochs"].append(metrics.epoch)

        def on_fit_end(self, trainer, result):
            seen["fit_end"] = result

    result = Trainer(masked_mlp(), train, test, TrainConfig(epochs=2, lr=0.02), callbacks=[Spy()]).fit()
    assert seen["batches"] == 2 * len(train) == result.steps
    assert seen["epochs"] == [0, 1]
    assert seen["fit_end"] is result and result.images_per_sec > 0


def test_keep_best_restores_best_epoch_state(fmnist):
    train, test = loaders(fmnist, n_train=256)
    model = masked_mlp()
    result = Trainer(model, train, test, TrainConfig(epochs=3, lr=0.05, keep_best=True)).fit()
    accs = [m.eval_acc for m in result.history]
    assert result.best_acc == max(accs) and result.final_acc == result.best_acc
    assert pemn.evaluate(model, test)[1] == pytest.approx(result.best_acc)


def test_only_scores_and_dense_leftovers_train(fmnist):
    model = masked_mlp(train_norm=False)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(".scores") for name in trainable)
    norms_before = {k: v.clone() for k, v in model.state_dict().items() if ".weight" in k or ".bias" in k}
    train, test = loaders(fmnist, n_train=256)
    Trainer(model, train, test, TrainConfig(epochs=1, lr=0.02)).fit()
    for key, value in norms_before.items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(lr=0.0), dict(optimizer="lbfgs"), dict(schedule="step"),
                                    dict(distill_alpha=1.5), dict(label_smoothing=1.0), dict(max_steps=0)])
def test_train_config_validation(kwargs):
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "onecycle"), ("adamw", "constant")])
def test_other_optimizers_and_schedules_run(fmnist, optimizer, schedule):
    train, test = loaders(fmnist, n_train=256)
    result = Trainer(masked_mlp(), train, test,
                     TrainConfig(epochs=1, lr=0.05, optimizer=optimizer, schedule=schedule, label_smoothing=0.1,
                                 grad_clip=1.0)).fit()
    assert result.steps == len(train) and result.final_acc is not None


class CountingTeacher(torch.nn.Module):
    """A dense model that counts the images it is run on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x):
        self.images += len(x)
        return self.model(x)


def distill_setup(fmnist, augment: bool, cache: bool = True):
    torch.manual_seed(1)
    teacher = CountingTeacher(pemn.create_model("test_mlp", in_chans=1, num_classes=10))
    train = BatchLoader.from_dataset(fmnist, "train", batch_size=64, shuffle=True, seed=3, drop_last=True,
                                     hflip=augment)  # fmt: skip
    config = TrainConfig(epochs=2, lr=0.02, distill_alpha=0.7, cache_teacher=cache)
    return Trainer(masked_mlp(), train, None, config, teacher=teacher), teacher, train


def test_teacher_logits_are_computed_once_and_are_the_teachers(fmnist):
    """Without augmentation the teacher sees each training image once (not once per step), and the logits a
    batch is distilled from are the teacher's own on that batch's images."""
    trainer, teacher, train = distill_setup(fmnist, augment=False)
    trainer.fit()
    n = train.dataset_size
    assert teacher.images == n  # one pass over the training images; 2 epochs x all batches without the cache
    seen = teacher.images
    for epoch in (0, 1):
        train.set_epoch(epoch)
        trainer._batch_indices = train.indices(epoch)
        for b, (x, _) in enumerate(train):
            with torch.no_grad():
                live = teacher.model(x)
            torch.testing.assert_close(trainer._teacher_batch(x, b), live, rtol=1e-5, atol=1e-6)
    assert teacher.images == seen  # the lookups above did not run the teacher


def test_augmented_or_uncached_distillation_runs_the_teacher_every_step(fmnist):
    for augment, cache in ((True, True), (False, False)):
        trainer, teacher, train = distill_setup(fmnist, augment=augment, cache=cache)
        trainer.fit()
        assert teacher.images == 2 * len(train) * 64, (augment, cache)


def test_cached_teacher_trains_like_the_live_teacher(fmnist):
    """The cache changes where the logits come from, not what is learned: the same losses to float noise."""
    results = []
    for cache in (True, False):
        trainer, _, _ = distill_setup(fmnist, augment=False, cache=cache)
        results.append([m.train_loss for m in trainer.fit().history])
    assert results[0] == pytest.approx(results[1], rel=1e-4)

"""What the masks are trained for: a loss, and a metric measured on the test data.

The default task is classification: cross-entropy on class logits, accuracy as the metric, distillation
from a dense teacher on temperature-softened logits. Any other objective (reconstruction, regression, a
segmentation loss) is given as the user's own functions, and ``make_task`` builds the ``Task``::

    pemn.compress(model, train, test=test, loss=torch.nn.functional.mse_loss,
                  metric=pemn.Metric("psnr", psnr, higher_is_better=True))

``loss(output, target)`` returns a scalar tensor (the batch mean). ``metric.fn(output, target)`` returns the
batch's mean value of the metric (a float or a 0-d tensor); the test-set value is the mean over samples,
each batch weighted by its size. The file records the metric's name, direction and value
(``provenance.metric``); classification files also record ``accuracy``, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["CLASSIFICATION", "Metric", "Task", "callable_name", "make_task"]


def callable_name(fn: Any) -> str:
    """``module:qualname`` of a function, for the file's record (``<lambda>`` and locals included)."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{name}"


@dataclass(frozen=True)
class Metric:
    """A named measure of a model's outputs against the targets; ``fn(output, target)`` -> batch mean."""

    name: str
    fn: Callable[[Any, Any], Any] | None = None  # None: the built-in accuracy
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"a Metric needs a non-empty name, found {self.name!r}")
        if self.fn is not None and not callable(self.fn):
            raise ConfigError(f"Metric {self.name!r}: fn must be callable, found {type(self.fn).__name__}")
        if not isinstance(self.higher_is_better, bool):
            raise ConfigError(f"Metric {self.name!r}: higher_is_better must be True or False")


@dataclass(frozen=True)
class Task:
    """The objective: ``loss`` None and ``metric`` None mean classification (cross-entropy, accuracy)."""

    loss: Callable[[Any, Any], Any] | None = None
    metric: Metric | None = None

    @property
    def classification(self) -> bool:
        return self.loss is None

    @property
    def metric_name(self) -> str:
        return self.metric.name if self.metric is not None else "accuracy"

    @property
    def higher_is_better(self) -> bool:
        return self.metric.higher_is_better if self.metric is not None else True

    def record(self) -> dict:
        """What the file's provenance records about the objective."""
        return {
            "loss": "cross_entropy" if self.loss is None else callable_name(self.loss),
            "metric": self.metric_name,
            "higher_is_better": self.higher_is_better,
        }


CLASSIFICATION = Task()


def make_task(loss: Any = None, metric: Any = None) -> Task:
    """A ``Task`` from ``pemn.compress``'s ``loss=`` and ``metric=`` arguments.

    ``metric`` is a ``Metric``, a ``(name, fn)`` or ``(name, fn, higher_is_better)`` tuple, or None
    (accuracy, classification only). A custom ``loss`` needs a metric: accuracy is defined for class
    logits only.
    """
    if loss is not None and not callable(loss):
        raise ConfigError(f"loss must be a function loss(output, target) -> tensor, found {type(loss).__name__}")
    if isinstance(metric, tuple):
        if not 2 <= len(metric) <= 3:
            raise ConfigError(f"metric as a tuple is (name, fn) or (name, fn, higher_is_better), found {metric!r}")
        metric = Metric(*metric)
    if metric is not None and not isinstance(metric, Metric):
        raise ConfigError(f"metric must be a pemn.Metric or a (name, fn) tuple, found {type(metric).__name__}")
    if metric is not None and metric.fn is None and metric.name != "accuracy":
        raise ConfigError(f"Metric {metric.name!r} needs fn: only 'accuracy' is built in")
    if loss is not None and (metric is None or metric.fn is None):
        raise ConfigError("a custom loss needs a metric with its own function, e.g. metric=('psnr', psnr_fn): "
                          "accuracy is defined for class logits only")
    if metric is not None and metric.fn is None:
        metric = None  # the built-in accuracy
    return Task(loss=loss, metric=metric)

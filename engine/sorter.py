"""Spike sorting by CRsAE in scikit-learn's shape: parameters in __init__, learning in fit.

    sorter = CRsAESorter(n_filters=8, n_epochs=3).fit(recording)
    sorting = sorter.predict(recording)      # or sorter.fit_predict(recording)
    sorter.filters_                          # (n_filters, n_taps, n_channels) learned shapes, unit norm,
                                             # as recorded (a whitened probe's unwhitened)
"""

from __future__ import annotations

from typing import Callable

from engine.io.recording import Recording
from engine.pipeline.run import SortPipeline
from engine.pipeline.sorting import Sorting
from engine.pipeline.training import TrainingConfig, TrainingSnapshot


class CRsAESorter:
    def __init__(self, **config) -> None:
        self.config = TrainingConfig(**config)
        self.config.validate()

    def fit(
        self,
        recording: Recording,
        callback: Callable[[TrainingSnapshot], None] | None = None,
    ) -> "CRsAESorter":
        self.pipeline_ = SortPipeline(recording, self.config)
        self.pipeline_.prepare()
        self.pipeline_.train(callback)
        self.filters_ = self.pipeline_.shown(self.pipeline_.filters())
        self.loss_history_ = list(self.pipeline_.trainer.loss_history)
        return self

    def predict(self, recording: Recording | None = None, progress: Callable[[float], None] | None = None) -> Sorting:
        """Sort `recording` (default: the one it was fitted on) with the learned dictionary."""
        if not hasattr(self, "pipeline_"):
            raise RuntimeError("call fit(recording) before predict()")
        sorting = self.pipeline_.sort(progress=progress, recording=recording)
        self.filters_ = self.pipeline_.shown(self.pipeline_.filters())
        return sorting

    def fit_predict(self, recording: Recording, progress: Callable[[float], None] | None = None) -> Sorting:
        return self.fit(recording).predict(progress=progress)

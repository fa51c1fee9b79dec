"""Model checkpoints: the learned dictionary and where training stood, to come back without retraining."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from engine.io.atomic import write_bytes_atomic
from engine.io.recording import Recording, RecordingError
from engine.model.crsae import select_device

CHECKPOINT_FORMAT = 1


def save_checkpoint(pipeline, path: str | Path) -> None:
    """Write `pipeline`'s (engine.pipeline.run.SortPipeline) model and training state atomically."""
    with pipeline.model_lock:
        state = {
            "format": CHECKPOINT_FORMAT,
            # Whether its dictionary was learned whitened, as decided (not "auto"): reopened, it is read the same way.
            "config": {**pipeline.config.to_dict(), "whiten": pipeline.recording is not pipeline.preprocessed},
            "filters": pipeline.model.filters.detach().cpu().clone(),
            "initial_filters": torch.from_numpy(pipeline.initial_filters),
            "lambdas": pipeline.model.lambdas.detach().cpu().clone(),
            **pipeline.trainer.state_dict(),
        }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | Path, recording: Recording, device: str | None = None):
    """A prepared SortPipeline on `recording` with the checkpoint's dictionary and training state."""
    from engine.pipeline.run import SortPipeline
    from engine.pipeline.training import TrainingConfig

    state = torch.load(Path(path), map_location="cpu", weights_only=False)
    # A checkpoint from before whitening (no "whiten" in its config) holds a dictionary learned unwhitened.
    config = TrainingConfig.from_dict({"whiten": False, **state["config"]})
    if device is not None:
        config.device = device
    else:
        try:
            select_device(config.device)
        except ValueError:
            # Trained on a GPU this machine lacks: the dictionary is the same on any device.
            config.device = "auto"
    filters = state["filters"].numpy()  # (n_filters, n_channels, n_taps)
    if recording.n_channels != filters.shape[1]:
        raise RecordingError(
            f"the checkpoint's filters have {filters.shape[1]} channels but the recording has "
            f"{recording.n_channels}: open the recording it was trained on"
        )
    config.n_taps = filters.shape[2]
    pipeline = SortPipeline(recording, config)
    # Each filter's own λ (also its spikes' bar): a faint neuron's filter has a lower one (engine/pipeline/faint_units.py).
    pipeline.prepare(initial_dictionary=filters, initial_lambdas=state["lambdas"].numpy())
    pipeline.initial_filters = state["initial_filters"].numpy()
    pipeline.trainer.load_state_dict(state)
    return pipeline

"""One window coded and reconstructed by the current model: what the live views draw."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.io.recording import Recording, RecordingError
from engine.model.crsae import CRsAE
from engine.pipeline.sorting import peak_taps


@dataclass(frozen=True)
class WindowReconstruction:
    start: int
    traces: np.ndarray  # (n, n_channels) float32 µV, preprocessed
    reconstruction: np.ndarray  # (n, n_channels) float32 µV, H x
    codes: np.ndarray  # (n_filters, n) float32, code of filter k aligned to its spike time


def reconstruct_window(model: CRsAE, recording: Recording, noise_levels: np.ndarray,
                       start: int, stop: int) -> WindowReconstruction:
    """Codes and reconstruction of samples [start, stop) of a preprocessed recording.

    The caller holds whatever lock guards `model` against a training step.
    """
    start = max(int(start), 0)
    stop = min(int(stop), recording.n_samples)
    if stop - start < model.n_taps:
        raise RecordingError(f"window [{start}, {stop}) is shorter than one filter ({model.n_taps} samples)")
    traces = recording.get_traces(start, stop)  # (n, n_channels) µV
    device = next(model.parameters()).device
    signal = torch.from_numpy(np.ascontiguousarray(traces.T / noise_levels[:, None]))[None].to(device)
    with torch.no_grad():
        codes = model.encode(signal)
        reconstruction = model.decode(codes)[0].cpu().numpy().T * noise_levels[None, :]
        filter_peaks = peak_taps(model.filters_numpy())
    codes = codes[0].cpu().numpy()  # (n_filters, n - n_taps + 1)
    aligned = np.zeros((codes.shape[0], stop - start), dtype=np.float32)
    for k, peak in enumerate(filter_peaks):
        aligned[k, peak : peak + codes.shape[1]] = codes[k]
    return WindowReconstruction(start, traces.astype(np.float32), reconstruction.astype(np.float32), aligned)

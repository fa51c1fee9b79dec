"""The largest eigenvalue of H(f)ᴴH(f) at every frequency f, by power iteration: one compiled loop.

CRsAE.lipschitz needs the norm of HᵀH for FISTA's step. At frequency f, HᵀH acts as
H(f)ᴴH(f), H(f) being the (channels × filters) matrix of the filters' Fourier coefficients,
and each filter lives on a few channels. In numpy each power step over all frequencies at
once wrote and read several (frequencies × filters × channels) complex temporaries and
scattered with bincount: 0.3-0.45 s a call for 38 filters of 120 taps on a 32-channel probe,
run on the sort's main thread with both cores waiting, three times a sort; 1.7 s a call at
384 channels. Here each frequency runs its own steps on a vector of filters and one of
channels, which stay in cache: the same steps from the same start, so the same values to
rounding.
"""

from __future__ import annotations

import numba
import numpy as np


def largest_eigenvalues(local: np.ndarray, channels: np.ndarray, n_channels: int, start: np.ndarray,
                        n_iterations: int) -> np.ndarray:
    """(F,) float64: for each frequency f, the Rayleigh quotient of H(f)ᴴH(f) after `n_iterations` power
    steps from start[f] (each step normalises the vector, takes the quotient, then applies the matrix).

    local: (F, K, N) complex, filter k's coefficients on its channels channels[k] (K, N) int, padded
    with -1 where local is 0; start: (F, K) complex."""
    return _largest_eigenvalues(np.ascontiguousarray(local, dtype=np.complex128),
                                np.ascontiguousarray(np.maximum(channels, 0), dtype=np.int64), int(n_channels),
                                np.array(start, dtype=np.complex128), int(n_iterations))


# nogil: the caller may run beside coding threads; cache: compiled once per machine.
@numba.njit(nogil=True, cache=True)
def _largest_eigenvalues(local, channels, n_channels, vectors, n_iterations):
    n_frequencies, n_filters, width = local.shape
    eigenvalues = np.ones(n_frequencies)
    signal = np.zeros(n_channels, dtype=np.complex128)
    image = np.empty(n_filters, dtype=np.complex128)
    for f in range(n_frequencies):
        vector = vectors[f]
        for _ in range(n_iterations):
            norm = 0.0
            for k in range(n_filters):
                norm += vector[k].real ** 2 + vector[k].imag ** 2
            norm = max(np.sqrt(norm), 1e-30)
            for k in range(n_filters):
                vector[k] /= norm
            signal[:] = 0.0
            for k in range(n_filters):  # H(f) v, each filter on its channels (padding adds 0)
                for n in range(width):
                    signal[channels[k, n]] += local[f, k, n] * vector[k]
            quotient = 0.0
            for k in range(n_filters):  # H(f)ᴴ (H(f) v), and vᴴ of it
                total = 0.0 + 0.0j
                for n in range(width):
                    total += np.conj(local[f, k, n]) * signal[channels[k, n]]
                image[k] = total
                quotient += (np.conj(vector[k]) * total).real
            eigenvalues[f] = quotient
            vector[:] = image
    return eigenvalues

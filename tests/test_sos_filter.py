"""The compiled zero-phase filter gives scipy's sosfiltfilt, bit for bit, whatever the layout."""

import numpy as np
import pytest
from scipy.signal import sosfiltfilt

from engine.pipeline.preprocessing import bandpass_sos, filter_margin
from engine.pipeline.sos_filter import sos_filtfilt

SOS = bandpass_sos(30000.0)
MARGIN = filter_margin(30000.0)


def scipy_filtfilt(traces, padlen):
    return sosfiltfilt(SOS, traces, axis=0, padtype="odd", padlen=padlen).astype(np.float32)


@pytest.mark.parametrize("n_channels", [1, 4, 32, 33, 70])
def test_every_channel_is_filtered_as_scipy_filters_it_alone(n_channels):
    # 33 and 70 channels cross the groups the compiled loop filters together.
    traces = (np.random.default_rng(n_channels).standard_normal((3000, n_channels)) * 30).astype(np.float32)
    traces[1000:1010] += 400.0  # a spike-like step: the filter's states must carry it along
    np.testing.assert_array_equal(sos_filtfilt(SOS, traces, MARGIN), scipy_filtfilt(traces, MARGIN))


def test_a_strided_or_double_or_integer_input_is_filtered_as_its_values_are():
    rng = np.random.default_rng(1)
    wide = (rng.standard_normal((2000, 80)) * 30).astype(np.float32)
    every_other = wide[:, ::2]  # not contiguous
    np.testing.assert_array_equal(sos_filtfilt(SOS, every_other, MARGIN), scipy_filtfilt(every_other, MARGIN))
    doubles = wide[:, :5].astype(np.float64)
    np.testing.assert_array_equal(sos_filtfilt(SOS, doubles, MARGIN), scipy_filtfilt(doubles, MARGIN))
    integers = (wide[:, :5] * 10).astype(np.int16)
    np.testing.assert_array_equal(sos_filtfilt(SOS, integers, MARGIN),
                                  scipy_filtfilt(integers.astype(np.float32), MARGIN))


def test_one_trace_short_traces_and_no_padding_are_scipys_too():
    trace = (np.random.default_rng(2).standard_normal(50) * 30).astype(np.float32)
    for padlen in (0, 1, 49):
        np.testing.assert_array_equal(sos_filtfilt(SOS, trace, padlen), scipy_filtfilt(trace, padlen))
    assert sos_filtfilt(SOS, np.zeros((0, 3), np.float32), 0).shape == (0, 3)


def test_a_padding_longer_than_the_trace_is_refused():
    with pytest.raises(ValueError, match="padlen 50"):
        sos_filtfilt(SOS, np.zeros(50, np.float32), 50)

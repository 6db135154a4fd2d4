"""RingBuffer: global indexing across wraparound, unavailable ranges, nearest-time lookup."""

import numpy as np

from neuralign.realtime.ringbuffer import RingBuffer


def _chunk(start, n, n_ch=2, sfreq=100.0):
    idx = np.arange(start, start + n)
    return np.vstack([idx, -idx]).astype(np.float32)[:n_ch], 10.0 + idx / sfreq


def test_wraparound_read_by_global_index():
    rb = RingBuffer(2, 50)
    for start in range(0, 130, 13):  # chunk size not dividing the capacity
        rb.write(*_chunk(start, 13))
    assert rb.n_written == 130 and rb.first_available == 80
    data, ts = rb.read(85, 130)  # spans the physical wrap
    np.testing.assert_array_equal(data[0], np.arange(85, 130))
    np.testing.assert_array_equal(data[1], -np.arange(85, 130))
    np.testing.assert_array_equal(ts, 10.0 + np.arange(85, 130) / 100.0)
    data[0, 0] = 999  # a copy, not a view
    assert rb.read(85, 86)[0][0, 0] == 85


def test_read_returns_none_when_overwritten_or_not_yet_written():
    rb = RingBuffer(2, 50)
    rb.write(*_chunk(0, 120))  # larger than the capacity: keeps the newest 50
    assert rb.n_written == 120
    assert rb.read(69, 80) is None  # 69 was overwritten
    assert rb.read(110, 121) is None  # 120 not written yet
    assert rb.read(80, 79) is None
    data, _ = rb.read(70, 120)
    np.testing.assert_array_equal(data[0], np.arange(70, 120))
    assert rb.read(120, 120)[0].shape == (2, 0)


def test_index_of_time_nearest_sample():
    rb = RingBuffer(2, 50)
    assert rb.index_of_time(10.0) is None
    rb.write(*_chunk(0, 130))
    assert rb.index_of_time(10.0 + 100 / 100.0) == 100
    assert rb.index_of_time(10.0 + 100.4 / 100.0) == 100
    assert rb.index_of_time(10.0 + 100.6 / 100.0) == 101
    assert rb.index_of_time(10.0 + 129 / 100.0 + 0.5) == 129  # past the end, within 1 s
    assert rb.index_of_time(10.0 + 80 / 100.0 - 0.001) == 80  # before the oldest kept sample
    assert rb.index_of_time(5.0) is None


def test_write_rejects_wrong_shape():
    import pytest

    rb = RingBuffer(2, 10)
    with pytest.raises(ValueError):
        rb.write(np.zeros((3, 4), np.float32), np.zeros(4))
    assert rb.n_written == 0

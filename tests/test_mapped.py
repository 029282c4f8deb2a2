"""Memory-mapped inputs (gpubp.data.mapped, the chunked checks of gpubp.data.validation)."""

import numpy as np
import pytest

import gpubp
from gpubp.data import mapped
from gpubp.data.validation import check_X, check_Y


@pytest.fixture
def mapped_X(tmp_path):
    X = np.random.default_rng(0).normal(size=(300, 7)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    return X, np.load(tmp_path / "X.npy", mmap_mode="r")


def test_take_reads_the_rows_of_a_mapping_and_of_its_views(mapped_X):
    X, M = mapped_X
    index = np.array([5, 0, 299, 17, 17, 128])
    assert mapped.is_mapped(M) and mapped.is_mapped(np.asarray(M[10:50]))
    assert not mapped.is_mapped(X)
    np.testing.assert_array_equal(mapped.take(M, index), X[index])
    view = np.ascontiguousarray(M[100:200])  # a row range: its own offset in the file
    np.testing.assert_array_equal(mapped.take(view, index[index < 100]),
                                  X[100:200][index[index < 100]])
    out = np.empty((len(index), 7), np.float32)
    assert mapped.take(M, index, out=out) is out
    np.testing.assert_array_equal(out, X[index])


def test_checks_keep_a_usable_mapping_and_convert_only_small_ones(mapped_X, monkeypatch):
    X, M = mapped_X
    checked = check_X(M, 7, np.float32)
    assert mapped.is_mapped(checked) and np.shares_memory(checked, M)
    converted = check_X(M, 7, np.float64)  # small: copied, as any array
    assert converted.dtype == np.float64 and not mapped.is_mapped(converted)
    monkeypatch.setattr(mapped, "COPY_LIMIT", 1000)
    with pytest.raises(TypeError, match="X is a memory-mapped float32 array and the network "
                                        "is float64: converting its 0 MiB would read"):
        check_X(M, 7, np.float64)


def test_chunked_checks_find_a_bad_value_in_a_late_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(mapped, "CHUNK_BYTES", 7 * 8 * 10)  # 10 rows per chunk
    X = np.ones((300, 7))
    X[287, 3] = np.inf
    np.save(tmp_path / "X.npy", X)
    with pytest.raises(ValueError, match="X must be finite, got 1 NaN or infinite"):
        check_X(np.load(tmp_path / "X.npy", mmap_mode="r"), 7, np.float64)
    Y = np.eye(3)[np.arange(300) % 3]
    Y[251] = [0.5, 0.25, 0.0]
    np.save(tmp_path / "Y.npy", Y)
    with pytest.raises(ValueError, match="rows must sum to 1 .* summing to 0.75"):
        check_Y(np.load(tmp_path / "Y.npy", mmap_mode="r"), 300, 3, "cross_entropy",
                np.float64)


def test_release_drops_the_pages_a_pass_touched(tmp_path):
    np.save(tmp_path / "X.npy", np.ones((4096, 1024), np.float32))  # 16 MiB
    M = np.load(tmp_path / "X.npy", mmap_mode="r")

    def resident_file_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssFile"))

    before = resident_file_kib()
    assert float(M.sum(dtype=np.float64)) == 4096 * 1024
    touched = resident_file_kib() - before
    mapped.release(M)
    released = resident_file_kib() - before
    assert touched > 8 * 1024 and released < touched / 4, (touched, released)


def test_fit_evaluate_predict_on_mappings_equal_in_memory_arrays(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 5))
    y = rng.integers(0, 3, 200)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    MX, My = np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    results = []
    for data in ((X, y), (MX, My)):
        net = gpubp.Network([5, 6, 3], dtype="float64", seed=0)
        history = net.fit(*data, epochs=3, batch_size=16, verbose=0, validation_split=0.2,
                          optimizer="adam", lr=0.01)
        results.append((net.theta.copy(), history.history, net.evaluate(*data),
                        net.predict(data[0])))
    (t0, h0, e0, p0), (t1, h1, e1, p1) = results
    np.testing.assert_allclose(t1, t0, rtol=1e-13, atol=1e-15)  # compiled vs per-step path
    for key in h0:
        np.testing.assert_allclose(h1[key], h0[key], rtol=1e-12)
    assert e1 == pytest.approx(e0, rel=1e-12)
    np.testing.assert_array_equal(p1, p0)

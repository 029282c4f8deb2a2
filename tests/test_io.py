"""Saving and loading: round trips, atomic writes, clear errors on bad files."""

import json
import os
import zipfile

import numpy as np
import pytest

import gpubp
from gpubp.io import model as io


@pytest.fixture
def net():
    return gpubp.Network([5, 4, 3, 2], hidden=["relu", "tanh"], output="sigmoid", dtype="float64",
                         seed=3, backend="reference")


def test_round_trip(tmp_path, net):
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = gpubp.load(path, device="cpu", backend="reference")
    assert (loaded.sizes, loaded.hidden, loaded.output, loaded.loss_name, loaded.dtype) == \
        (net.sizes, net.hidden, net.output, net.loss_name, net.dtype)
    for a, b in zip(sum(net.get_params(), []), sum(loaded.get_params(), [])):
        np.testing.assert_array_equal(a, b)
    X = np.random.default_rng(0).normal(size=(7, 5))
    np.testing.assert_array_equal(net.forward(X), loaded.forward(X))


def test_round_trip_float32_single_layer(tmp_path):
    net = gpubp.Network([3, 2], output="identity", seed=1)
    net.save(tmp_path / "m.npz")
    loaded = gpubp.load(tmp_path / "m.npz")
    assert loaded.dtype == np.float32 and loaded.L == 1
    np.testing.assert_array_equal(net.get_params()[0][0], loaded.get_params()[0][0])


def test_save_is_atomic_when_writing_fails(tmp_path, net, monkeypatch):
    """A crash mid-write leaves the previous file intact and no temporary file behind."""
    path = tmp_path / "model.npz"
    net.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_save_never_exposes_a_partial_file(tmp_path, net, monkeypatch):
    """While the data are being written, the destination still holds the old file."""
    path = tmp_path / "model.npz"
    net.save(path)
    before = path.read_bytes()
    real_savez = np.savez
    seen = {}

    def spying_savez(f, **arrays):
        real_savez(f, **arrays)
        seen["during"] = path.read_bytes()

    monkeypatch.setattr(np, "savez", spying_savez)
    net.save(path)
    assert seen["during"] == before


def test_saved_file_has_ordinary_permissions(tmp_path, net):
    """Not the private 0600 of the temporary file; an existing file keeps its mode."""
    umask = os.umask(0o022)
    try:
        net.save(tmp_path / "new.npz")
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o644
        (tmp_path / "new.npz").chmod(0o640)
        net.save(tmp_path / "new.npz")
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        gpubp.load(tmp_path / "nope.npz")


def test_truncated_file(tmp_path, net):
    path = tmp_path / "model.npz"
    net.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a readable gpubp model file"):
        gpubp.load(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="not a readable gpubp model file"):
        gpubp.load(path)


def test_foreign_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"not a gpubp model file \(no header\)"):
        gpubp.load(path)


def _rewrite(path, header=None, **arrays):
    with np.load(path) as data:
        content = {k: data[k] for k in data.files}
    if header is not None:
        content["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    content.update(arrays)
    np.savez(path, **content)


def test_future_format_version(tmp_path, net):
    path = tmp_path / "model.npz"
    net.save(path)
    header, _ = io.read_npz(path)
    _rewrite(path, {**header, "version": 99})
    with pytest.raises(ValueError, match="format version 99; this gpubp reads version 1"):
        gpubp.load(path)


def test_wrong_shapes(tmp_path, net):
    path = tmp_path / "model.npz"
    net.save(path)
    _rewrite(path, W1=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"do not fit its header: W\[1\] must have shape \(4, 3\)"):
        gpubp.load(path)


def test_wrong_dtype(tmp_path, net):
    path = tmp_path / "model.npz"
    net.save(path)
    _rewrite(path, W0=np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="has dtype float32, the header says float64"):
        gpubp.load(path)


def test_missing_array(tmp_path, net):
    path = tmp_path / "model.npz"
    net.save(path)
    with zipfile.ZipFile(path) as z:
        keep = {n: z.read(n) for n in z.namelist() if n != "b2.npy"}
    with zipfile.ZipFile(path, "w") as z:
        for n, d in keep.items():
            z.writestr(n, d)
    with pytest.raises(ValueError, match="missing array 'b2'"):
        gpubp.load(path)


def test_invalid_header(tmp_path, net):
    path = tmp_path / "model.npz"
    net.save(path)
    header, _ = io.read_npz(path)
    _rewrite(path, {**header, "output": "gelu"})
    with pytest.raises(ValueError, match="has an invalid header"):
        gpubp.load(path)


def test_pickled_object_arrays_are_refused(tmp_path, net):
    path = tmp_path / "model.npz"
    net.save(path)
    _rewrite(path, W0=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="not a readable gpubp model file"):
        gpubp.load(path)

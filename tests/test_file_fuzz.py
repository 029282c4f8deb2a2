"""Hostile model and checkpoint files: every one is a ValueError naming the file, or loads.

A damaged file may still load when the damage missed everything that matters (a zip
timestamp, say); then it must load *exactly* the saved network. Anything else, whatever
the bytes, is a ``ValueError`` whose message names the file: never an exception from the
zip or ``.npy`` internals, never a huge allocation.
"""

import json
import os
import zipfile
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpubp
from gpubp.training import checkpoint
from gpubp.io import model as io

OUTCOMES = Counter()  # (damage, outcome) -> count, printed by the last fuzz test
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bytes of a model file and of a checkpoint (Adam state, early stopping, split)."""
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    net = gpubp.Network([4, 5, 3], hidden="tanh", dtype="float64", seed=0, backend="reference")
    net.fit(X, y, epochs=2, batch_size=8, verbose=0, optimizer="adam", validation_split=0.25,
            early_stopping=5, checkpoint=d / "ckpt.npz")
    net.save(d / "model.npz")
    return {"model": (d / "model.npz").read_bytes(), "checkpoint": (d / "ckpt.npz").read_bytes(),
            "params": net.get_params()}


def _check(path, files, kind, label, params=None):
    """Load ``path`` both ways; each is a ValueError naming it, or the saved parameters
    (``params``, when an edit replaced some by valid ones)."""
    params = params or files["params"]
    for reader in (gpubp.load, checkpoint.load):
        try:
            loaded = reader(path)
        except ValueError as exc:
            assert str(path) in str(exc), str(exc)
            OUTCOMES[label, "ValueError"] += 1
            continue
        if reader is checkpoint.load and kind == "model":
            pytest.fail("a model file read as a checkpoint")
        W, b = (loaded.W, loaded.b) if reader is checkpoint.load else loaded.get_params()
        for ours, saved in zip(W + b, params[0] + params[1]):
            np.testing.assert_array_equal(ours, saved)
        OUTCOMES[label, "loads intact"] += 1


def _write(tmp_path, data):
    path = tmp_path / "damaged.npz"
    path.write_bytes(data)
    return path


kinds = st.sampled_from(["model", "checkpoint"])


@FUZZ
@given(kind=kinds, data=st.data())
def test_bit_flips(tmp_path, files, kind, data):
    raw = bytearray(files[kind])
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
        raw[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    _check(_write(tmp_path, bytes(raw)), files, kind, "bit flip")


@FUZZ
@given(kind=kinds, data=st.data())
def test_truncations(tmp_path, files, kind, data):
    raw = files[kind]
    cut = data.draw(st.integers(0, len(raw) - 1), label="length")
    _check(_write(tmp_path, raw[:cut]), files, kind, "truncation")


@FUZZ
@given(kind=kinds, data=st.data())
def test_zeroed_ranges(tmp_path, files, kind, data):
    raw = bytearray(files[kind])
    start = data.draw(st.integers(0, len(raw) - 1), label="start")
    length = data.draw(st.integers(1, 64), label="length")
    raw[start:start + length] = bytes(len(raw[start:start + length]))
    _check(_write(tmp_path, bytes(raw)), files, kind, "zeroed range")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.integers(10**6, 10**15)
    | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["float32", "float64", "relu", "softmax", "gpubp", "mse"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8)


def _rewrite(path, raw, header_edit=None, array_edit=None):
    path.write_bytes(raw)
    arrays = dict(io.read_npz(path)[1])
    header = io.read_npz(path)[0]
    if header_edit:
        header_edit(header)
    if array_edit:
        array_edit(arrays)
    np.savez(path, header=io.header_array(header), **arrays)


@FUZZ
@given(kind=kinds, key=st.sampled_from(["sizes", "hidden", "output", "loss", "dtype",
                                        "version", "format", "checkpoint"]),
       value=json_values, data=st.data())
def test_header_edits(tmp_path, files, kind, key, value, data):
    path = tmp_path / "edited.npz"

    def edit(header):
        if key == "checkpoint" and isinstance(header.get("checkpoint"), dict):
            sub = data.draw(st.sampled_from(sorted(header["checkpoint"])), label="field")
            header["checkpoint"][sub] = value
        else:
            header[key] = value

    _rewrite(path, files[kind], header_edit=edit)
    _check(path, files, kind, "header edit")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values, data=st.data())
def test_resuming_from_an_edited_checkpoint(tmp_path, files, value, data):
    """Resuming from a checkpoint whose training state was edited: a ValueError naming
    the file, or a run that goes on (the edit was harmless or left the run consistent)."""
    path = tmp_path / "edited.npz"

    def edit(header):
        state = header["checkpoint"]
        key = data.draw(st.sampled_from(sorted(state)), label="field")
        if isinstance(state[key], dict) and state[key] and data.draw(st.booleans()):
            state[key][data.draw(st.sampled_from(sorted(state[key])), label="sub")] = value
        else:
            state[key] = value

    _rewrite(path, files["checkpoint"], header_edit=edit)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    net = gpubp.Network([4, 5, 3], hidden="tanh", dtype="float64", seed=0, backend="reference")
    try:
        net.fit(X, y, epochs=3, batch_size=8, verbose=0, optimizer="adam",
                validation_split=0.25, early_stopping=5, resume=path)
    except ValueError as exc:
        assert str(path) in str(exc), str(exc)
        OUTCOMES["resume after header edit", "ValueError"] += 1
    else:
        OUTCOMES["resume after header edit", "loads intact"] += 1


@FUZZ
@given(kind=kinds, name=st.sampled_from(["W0", "b1", "W1", "opt.m.0", "order", "split",
                                         "cb1.W0"]),
       shape=st.lists(st.integers(0, 6), max_size=3),
       dtype=st.sampled_from(["float64", "float32", "int64", "uint8", "U3", "bool"]))
def test_array_edits(tmp_path, files, kind, name, shape, dtype):
    path = tmp_path / "edited.npz"

    W, b = [list(p) for p in files["params"]]

    def edit(arrays):
        arrays[name] = np.ones(shape, dtype=dtype)
        if name[0] in "Wb" and name[1:].isdigit():  # may be a valid replacement
            (W if name[0] == "W" else b)[int(name[1:])] = arrays[name]

    _rewrite(path, files[kind], array_edit=edit)
    _check(path, files, kind, "array edit", (W, b))


@FUZZ
@given(arrays=st.dictionaries(
    st.sampled_from(["header", "W0", "b0", "x", "arr_0"]),
    st.sampled_from([np.zeros(3), np.arange(5, dtype=np.uint8), np.array("gpubp"),
                     np.frombuffer(b'{"format": "gpubp", "version": 1}', np.uint8),
                     np.ones((2, 2), np.float32)]),
    max_size=4))
def test_foreign_npz(tmp_path, files, arrays):
    path = tmp_path / "foreign.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")):
        gpubp.load(path)
    OUTCOMES["foreign npz", "ValueError"] += 1


# -- allocation before checking -----------------------------------------------------------
def _peak_bytes(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_header_claiming_huge_layers_is_refused_before_allocating(tmp_path, files):
    path = tmp_path / "huge.npz"
    _rewrite(path, files["model"], header_edit=lambda h: h.update(sizes=[10**7, 10**7, 3]))

    def load():
        with pytest.raises(ValueError, match=r"W\[0\] must have shape \(10000000, 10000000\)"):
            gpubp.load(path)

    assert _peak_bytes(load) < 10 * 2**20  # the network would need 800 TB


def test_npy_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    """An ``.npy`` member whose own header claims 10^11 elements (np.load allocates them)."""
    path = tmp_path / "huge.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(3))
    header["shape"] = (10**11,)
    with zipfile.ZipFile(path, "w") as z, z.open("W0.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(24))

    def load():
        with pytest.raises(ValueError, match=r"claims shape \(100000000000,\)"):
            gpubp.load(path)

    assert _peak_bytes(load) < 10 * 2**20


def test_zip_member_claiming_a_huge_size_is_refused(tmp_path, files):
    """A central directory entry whose uncompressed size a small file cannot hold."""
    path = tmp_path / "model.npz"
    raw = bytearray(files["model"])
    with zipfile.ZipFile(_write(tmp_path, bytes(raw))) as z:
        info = z.getinfo("W0.npy")
    # the central directory record of W0.npy: signature PK\1\2, uncompressed size at +24
    pos = raw.index(b"PK\x01\x02")
    while raw[pos + 46:pos + 46 + 6] != b"W0.npy":
        pos = raw.index(b"PK\x01\x02", pos + 1)
    raw[pos + 24:pos + 28] = (2**32 - 2).to_bytes(4, "little")
    assert info.file_size < 2**32 - 2
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{path}.*claims {2**32 - 2} bytes"):
        gpubp.load(path)


def test_object_member_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "pickle.npz"
    np.savez(path, header=io.header_array({"format": "gpubp"}),
             W0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="holds Python objects"):
        gpubp.load(path)


def test_header_json_nested_deeply_is_a_value_error(tmp_path, files):
    path = tmp_path / "deep.npz"
    text = '{"format": "gpubp", "version": 1, "sizes": ' + "[" * 100_000 + "]" * 100_000 + "}"
    np.savez(path, header=np.frombuffer(text.encode(), np.uint8))
    with pytest.raises(ValueError, match=f"{path}"):
        gpubp.load(path)


def test_fuzzing_reached_the_checks(files):
    """Runs after the fuzz tests of this module: each kind of damage was mostly refused
    (a fuzzer whose damage always missed would prove nothing). Prints the counts."""
    if not OUTCOMES:
        pytest.skip("run with the fuzz tests of this module")
    print("\nfuzz outcomes:", json.dumps({f"{k} / {o}": n for (k, o), n in
                                          sorted(OUTCOMES.items())}, indent=1))
    for label in {k for k, _ in OUTCOMES}:
        assert OUTCOMES[label, "ValueError"] > OUTCOMES[label, "loads intact"], label


def test_leftover_from_a_killed_save_is_removed_by_the_next_save(tmp_path):
    """A save killed (SIGKILL) between writing and renaming leaves its temp file; the next
    save of the same target removes it, and leaves another target's temp file alone."""
    import subprocess
    import sys

    target = tmp_path / "m.npz"
    code = (
        "import os, signal, gpubp\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"gpubp.Network([3, 2], seed=0).save({str(target)!r})\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(gpubp.__file__)), os.environ.get("PYTHONPATH", "")]))
    for _ in range(2):  # the second killed save removes the first one's leftover
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
        assert proc.returncode != 0
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.npz.")]
        assert len(leftovers) == 1 and not target.exists(), leftovers
    other = tmp_path / ".other.npz.gpubp-1-abcd.tmp"
    other.write_bytes(b"x")
    gpubp.Network([3, 2], seed=0).save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "m.npz"]
    gpubp.load(target)


def test_save_into_a_missing_directory_names_the_users_path(tmp_path):
    path = tmp_path / "missing-dir" / "m.npz"
    with pytest.raises(ValueError, match=f"{path}.*does not exist"):
        gpubp.Network([3, 2], seed=0).save(path)
    assert not (tmp_path / "missing-dir").exists()

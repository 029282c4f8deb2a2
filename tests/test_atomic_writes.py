"""Saved files are never lost or left half-written: model files and training checkpoints.

A write is interrupted at each of its stages (while the arrays are being written, at the
``fsync``, right after it, at the rename) and the previous file must still be there,
byte for byte, and load; and the data must reach the disk (``fsync``) before the rename
makes them the file, or a power cut just after the rename could leave an empty file.
"""

import os
import stat
import zipfile

import numpy as np
import pytest

import gpubp
from gpubp.training import checkpoint
from tests.conftest import make_problem


class Crash(OSError):
    """What the injected faults raise (an OSError, as a full disk or a dead device would)."""


def _crash_while_writing(monkeypatch):
    """The third array entry of the zip fails: some bytes of the new file are already out."""
    real_open = zipfile.ZipFile.open
    opened = []

    def open_(self, name, mode="r", **kwargs):
        if mode == "w":
            opened.append(name)
            if len(opened) == 3:
                raise Crash("disk full while writing")
        return real_open(self, name, mode, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", open_)


def _crash_at_fsync(monkeypatch):
    def fsync(fd):
        raise Crash("I/O error at fsync")

    monkeypatch.setattr(os, "fsync", fsync)


def _crash_after_fsync(monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        real_fsync(fd)
        raise Crash("killed just after fsync")

    monkeypatch.setattr(os, "fsync", fsync)


def _crash_at_rename(monkeypatch):
    def fail(*args, **kwargs):
        raise Crash("killed before the rename")

    monkeypatch.setattr(os, "replace", fail)
    monkeypatch.setattr(os, "rename", fail)


STAGES = {"while writing": _crash_while_writing, "at fsync": _crash_at_fsync,
          "after fsync": _crash_after_fsync, "at rename": _crash_at_rename}


def _record_fsync_and_rename(monkeypatch):
    """Log ``("fsync", inode, size)`` (``("fsync dir", inode, None)`` for a directory) and
    ``("rename", inode of the source, destination)``."""
    events = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd):
        real_fsync(fd)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            events.append(("fsync dir", st.st_ino, None))
        else:
            events.append(("fsync", st.st_ino, st.st_size))

    def replace(src, dst, **kwargs):
        events.append(("rename", os.stat(src).st_ino, os.fspath(dst)))
        return real_replace(src, dst, **kwargs)

    def rename(src, dst, **kwargs):
        events.append(("rename", os.stat(src).st_ino, os.fspath(dst)))
        return real_rename(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    return events


def _assert_synced_before_rename(events, path):
    """The file now at ``path`` was fsynced, complete, before it was renamed there."""
    st = os.stat(path)
    renames = [i for i, e in enumerate(events) if e[0] == "rename" and e[1] == st.st_ino]
    assert renames, f"{path} was not renamed into place (written in place?): {events}"
    assert events[renames[-1]][2] == os.fspath(path)
    synced = [e for e in events[:renames[-1]] if e == ("fsync", st.st_ino, st.st_size)]
    assert synced, f"no fsync of the complete file before its rename: {events}"
    if os.name == "posix":  # and the directory after it, for the rename to be durable
        directory = os.stat(os.path.dirname(os.path.abspath(path))).st_ino
        assert ("fsync dir", directory, None) in events[renames[-1]:], events


# -- model files: gpubp.Network.save / gpubp.io.model.save --------------------------------------------
def _net(seed):
    return gpubp.Network([4, 3, 2], hidden="tanh", seed=seed, dtype="float64",
                         backend="reference")


@pytest.mark.parametrize("stage", list(STAGES))
def test_interrupted_save_keeps_the_previous_model(tmp_path, monkeypatch, stage):
    path = tmp_path / "model.npz"
    old = _net(1)
    old.save(path)
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        STAGES[stage](patch)
        with pytest.raises(Crash):
            _net(2).save(path)
    assert path.read_bytes() == before
    loaded = gpubp.load(path, backend="reference")
    for got, expected in zip(sum(loaded.get_params(), []), sum(old.get_params(), [])):
        np.testing.assert_array_equal(got, expected)
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_save_fsyncs_the_data_before_the_rename(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    _net(1).save(path)  # replacing an existing file, the case that matters
    events = _record_fsync_and_rename(monkeypatch)
    _net(2).save(path)
    _assert_synced_before_rename(events, path)


# -- training checkpoints: fit(checkpoint=...) ---------------------------------------------------
@pytest.fixture(scope="module")
def problem():
    return make_problem([4, 3], "cross_entropy", 24, seed=5)


def _fit(problem, path, epochs, resume=None):
    net = gpubp.Network([4, 5, 3], seed=0, dtype="float64", backend="reference")
    net.fit(*problem, epochs=epochs, batch_size=8, optimizer="adam", lr=0.01, verbose=0,
            checkpoint=path, resume=resume)
    return net


@pytest.mark.parametrize("stage", list(STAGES))
def test_interrupted_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, problem, stage):
    path = tmp_path / "run.npz"
    _fit(problem, path, epochs=2)  # checkpoints after epochs 0 and 1
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        STAGES[stage](patch)
        with pytest.raises(Crash):  # the checkpoint of epoch 2 fails
            _fit(problem, path, epochs=4, resume=path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.npz"]
    assert checkpoint.load(path).epoch == 1
    # still a working checkpoint: resuming from it ends where a straight run does
    resumed = _fit(problem, path, epochs=4, resume=path)
    straight = _fit(problem, tmp_path / "straight.npz", epochs=4)
    for got, expected in zip(sum(resumed.get_params(), []), sum(straight.get_params(), [])):
        np.testing.assert_array_equal(got, expected)


def test_checkpoint_fsyncs_the_data_before_the_rename(tmp_path, monkeypatch, problem):
    path = tmp_path / "run.npz"
    _fit(problem, path, epochs=1)
    events = _record_fsync_and_rename(monkeypatch)
    _fit(problem, path, epochs=3, resume=path)
    _assert_synced_before_rename(events, path)
    assert sum(e[0] == "rename" for e in events) == 2  # the checkpoints of epochs 1 and 2

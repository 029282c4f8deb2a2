"""CSVLogger, TensorBoard and MLflowLogger, read back with the readers those projects ship:
TensorBoard's own event reader, MLflow's tracking client on a local file store."""

import csv

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import gpubp


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4))
    return X, np.eye(3)[np.argmax(X[:, :3], axis=1)]


def _net():
    return gpubp.Network([4, 5, 3], hidden="relu", output="softmax", dtype="float64", seed=2)


def _fit(net, data, callbacks, epochs=3, **options):
    return net.fit(*data, epochs=epochs, batch_size=16, lr=0.3, verbose=0,
                   validation_data=data, callbacks=callbacks, **options)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logger_one_row_per_epoch(tmp_path, data):
    path = tmp_path / "log.csv"
    history = _fit(_net(), data, [gpubp.CSVLogger(path)])
    rows = _read_csv(path)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    for key in ("loss", "val_loss", "accuracy"):
        assert [float(r[key]) for r in rows] == history[key]  # exact: repr of the floats
    _fit(_net(), data, [gpubp.CSVLogger(path)], epochs=2)  # a new run starts afresh
    assert len(_read_csv(path)) == 2


def test_csv_logger_appends_on_resume_without_repeating_epochs(tmp_path, data):
    path, ckpt = tmp_path / "log.csv", tmp_path / "run.ckpt.npz"
    whole = _fit(_net(), data, None, epochs=4)
    _fit(_net(), data, [gpubp.CSVLogger(path)], epochs=2, checkpoint=ckpt)
    with open(path, "a") as f:  # a row written after the checkpoint, by a run then killed
        f.write("2,9,9,9,9,9\n")
    _fit(_net(), data, [gpubp.CSVLogger(path)], epochs=4, resume=ckpt)
    rows = _read_csv(path)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], whole["loss"], rtol=1e-12)


def test_csv_logger_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="path must be a path in an existing directory"):
        gpubp.CSVLogger(tmp_path / "missing" / "log.csv")
    with pytest.raises(ValueError, match="separator must be one character"):
        gpubp.CSVLogger(tmp_path / "log.csv", separator=";;")


def test_tensorboard_scalars_histograms_and_batches(tmp_path, data):
    logdir = tmp_path / "tb"
    callback = gpubp.TensorBoard(logdir, histograms=True, trace_data=(data[0][:8], data[1][:8]),
                                 batch_every=2)
    history = _fit(_net(), data, [callback], gradient_flow=True)
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    for key in ("loss", "val_loss", "accuracy", "lr", "grad_norm_W1", "mean_abs_delta2"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [0, 1, 2], key
        np.testing.assert_allclose([s.value for s in scalars], history[key], rtol=1e-6)
    assert {"W/1", "W/2", "b/1", "b/2", "delta/1", "delta/2", "grad_W/1", "grad_W/2"} <= \
        set(tags["histograms"])
    W_hist = events.Histograms("W/2")[-1].histogram_value
    assert W_hist.num == 5 * 3  # every weight of W^2
    # 4 batches per epoch, every second one: at steps 2, 4, 6, ... 12
    assert [s.step for s in events.Scalars("batch/loss")] == [2, 4, 6, 8, 10, 12]


def test_tensorboard_checks_its_arguments(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="logdir must be a directory"):
        gpubp.TensorBoard(tmp_path / "file")
    with pytest.raises(ValueError, match="histogram_every must be a positive int, got 0"):
        gpubp.TensorBoard(tmp_path / "tb", histogram_every=0)
    with pytest.raises(TypeError, match="trace_data must be a tuple"):
        gpubp.TensorBoard(tmp_path / "tb", trace_data=[1, 2])


def test_mlflow_logger_params_metrics_and_model(tmp_path, data, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    # MLflow 3 keeps plain-directory stores behind this switch; the test wants no server
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    logger = gpubp.MLflowLogger(tracking_uri=uri, experiment="gpubp-test", run_name="r1")
    net = _net()
    history = _fit(net, data, [logger])
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert run.data.params["sizes"] == "[4, 5, 3]" and run.data.params["optimizer"] == "SGD"
    assert float(run.data.params["optimizer.lr"]) == 0.3
    for key in ("loss", "val_loss", "accuracy"):
        logged = client.get_metric_history(logger.run_id, key)
        assert [m.step for m in logged] == [0, 1, 2]
        np.testing.assert_allclose([m.value for m in logged], history[key], rtol=1e-12)
    assert [a.path for a in client.list_artifacts(logger.run_id, "model")] == \
        ["model/model.safetensors"]
    local = client.download_artifacts(logger.run_id, "model/model.safetensors", str(tmp_path))
    X = data[0][:5]
    np.testing.assert_array_equal(gpubp.load(local).forward(X), net.forward(X))


def test_mlflow_logger_resumed_run_logs_to_the_same_mlflow_run(tmp_path, data, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri, ckpt = (tmp_path / "mlruns").as_uri(), tmp_path / "run.ckpt.npz"
    first = gpubp.MLflowLogger(tracking_uri=uri, log_model=False)
    _fit(_net(), data, [first], epochs=2, checkpoint=ckpt)
    second = gpubp.MLflowLogger(tracking_uri=uri, log_model=False)
    _fit(_net(), data, [second], epochs=4, resume=ckpt)
    assert second.run_id == first.run_id
    client = MlflowClient(tracking_uri=uri)
    assert [m.step for m in client.get_metric_history(first.run_id, "loss")] == [0, 1, 2, 3]
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert client.list_artifacts(first.run_id) == []  # log_model=False

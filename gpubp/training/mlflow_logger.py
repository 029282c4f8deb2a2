"""An MLflow run of a fit: parameters, metrics per epoch, the final model as an artifact.

Through ``mlflow-skinny``'s tracking client (``gpubp[mlflow]``), so it logs to any
tracking server or store MLflow can reach. (MLflow 3 refuses a plain-directory
``file:`` store unless ``MLFLOW_ALLOW_FILE_STORE=true``; a server or ``sqlite:`` store
needs nothing.)
"""

import importlib.util
import os
import tempfile
import time

from gpubp.optional import require
from gpubp.training.callbacks import Callback


def _mlflow():
    # optional: mlflow-skinny (gpubp[mlflow]); importing it takes seconds, so only here
    return require("mlflow", "mlflow", "the MLflowLogger callback", "mlflow-skinny")


class MLflowLogger(Callback):
    """Log the run to MLflow.

    Parameters
    ----------
    tracking_uri : str or None
        Where to log; None: MLflow's own default (``$MLFLOW_TRACKING_URI``, or the active
        run's).
    experiment : str or None
        Experiment name (created if need be); None: MLflow's default experiment.
    run_name : str or None
    log_model : bool
        Log the trained network as the artifact ``model/model.safetensors`` (``.npz``
        where safetensors is not installed) when training ends.

    Attributes
    ----------
    run_id : str or None
        The MLflow run's id once training began. Inside ``with mlflow.start_run():``
        (and no ``tracking_uri``) it is the active run, left open; otherwise this logger
        creates the run and ends it with the training. It is part of a checkpoint, so a
        resumed fit goes on logging to the same run.
    """

    def __init__(self, tracking_uri=None, experiment=None, run_name=None, log_model=True):
        for name, value in (("tracking_uri", tracking_uri), ("experiment", experiment),
                            ("run_name", run_name)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, got {value!r}")
        if not isinstance(log_model, bool):
            raise TypeError(f"log_model must be True or False, got {log_model!r}")
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.log_model = log_model
        self.run_id = None
        self._owned = True
        self._client = None
        _mlflow()  # fail at construction, not after the first epoch

    def __repr__(self):
        return (f"MLflowLogger(tracking_uri={self.tracking_uri!r}, "
                f"experiment={self.experiment!r}, run_name={self.run_name!r})")

    def on_train_begin(self, run):
        mlflow = _mlflow()
        self._client = mlflow.tracking.MlflowClient(tracking_uri=self.tracking_uri)
        active = mlflow.active_run() if self.tracking_uri is None else None
        if self.run_id is not None:  # resumed from a checkpoint: the same run goes on
            self._client.update_run(self.run_id, status="RUNNING")
            return
        if active is not None:
            self.run_id, self._owned = active.info.run_id, False
        else:
            experiment_id = "0"
            if self.experiment is not None:
                found = self._client.get_experiment_by_name(self.experiment)
                experiment_id = found.experiment_id if found is not None else \
                    self._client.create_experiment(self.experiment)
            self.run_id = self._client.create_run(experiment_id,
                                                  run_name=self.run_name).info.run_id
        self._log_params(mlflow, run)

    def _log_params(self, mlflow, run):
        net, optimizer = run.net, run.optimizer
        params = {"sizes": net.sizes, "hidden": net.hidden, "output": net.output,
                  "loss": net.loss_name, "dtype": net.dtype.name, "backend": net.backend.name,
                  "device": net.device, "epochs": run.epochs,
                  "optimizer": type(optimizer).__name__}
        params.update({f"optimizer.{k}": v for k, v in optimizer.get_config().items()
                       if k != "name"})
        entities = mlflow.entities
        self._client.log_batch(self.run_id, params=[
            entities.Param(k, str(v)[:6000]) for k, v in params.items()])

    def on_epoch_end(self, run, epoch, logs):
        now = int(time.time() * 1000)
        metrics = [_mlflow().entities.Metric(k, float(v), now, epoch) for k, v in logs.items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def on_train_end(self, run):
        if self._client is None:
            return
        if self.log_model:
            with tempfile.TemporaryDirectory() as directory:
                have = importlib.util.find_spec("safetensors") is not None
                path = os.path.join(directory, "model.safetensors" if have else "model.npz")
                run.net.save(path)
                self._client.log_artifact(self.run_id, path, artifact_path="model")
        if self._owned:
            self._client.set_terminated(self.run_id, "FINISHED")

    def state_dict(self):
        return {"run_id": self.run_id}, {}

    def load_state_dict(self, config, arrays):
        run_id = config["run_id"]
        if run_id is not None and not isinstance(run_id, str):
            raise TypeError(f"run_id must be a str or None, got {run_id!r}")
        self.run_id = run_id

"""Training scenarios shared by tests/test_distributed.py and the ranks it launches.

A case is a JSON-able dict: the network (``sizes``, ``hidden``, ``dtype``, ``seed``), the
data (``P`` rows drawn from ``data_seed``) and the keyword arguments of ``fit``. The test
runs a case in its own process (the single-process oracle) and, through
``distributed_worker.py`` under ``mpiexec``, on several ranks; both build the same data
from the case alone.
"""

import json

import numpy as np

import gpubp
from gpubp.training.callbacks import Callback
from gpubp.optim.optimizers import SGD


def make_data(case, rank=0):
    """``(X, y)`` of the case: Gaussian inputs, labels from a fixed random linear map.

    ``case["spoil"] = {"rank": r, "what": "nan" | "rows" | "mapped"}`` gives rank ``r`` bad
    data (a NaN, one row fewer, or the same rows memory-mapped, which would take another
    path through the step): the start-up check must catch it on every rank.
    """
    rng = np.random.default_rng(case.get("data_seed", 0))
    n_in, n_out = case["sizes"][0], case["sizes"][-1]
    X = rng.normal(size=(case["P"], n_in)).astype(case.get("dtype", "float64"))
    scores = X @ rng.normal(size=(n_in, n_out)) + 0.5 * rng.normal(size=(case["P"], n_out))
    y = scores.argmax(axis=1)
    spoil = case.get("spoil")
    if spoil is not None and spoil["rank"] == rank:
        if spoil["what"] == "nan":
            X[len(X) // 2, 0] = np.nan
        elif spoil["what"] == "mapped":  # the same values, memory-mapped from a file
            import os
            import tempfile

            path = os.path.join(tempfile.mkdtemp(), "X.npy")
            np.save(path, X)
            X = np.load(path, mmap_mode="r")
        else:
            X, y = X[:-1], y[:-1]
    return X, y


def make_network(case):
    return gpubp.Network(case["sizes"], hidden=case.get("hidden", "tanh"), output="softmax",
                         dtype=case.get("dtype", "float64"), seed=case.get("seed", 0),
                         device=case.get("device", "cpu"), backend=case.get("backend"),
                         dropout=case.get("dropout", 0.0))


class RaiseOn(Callback):
    """Raise (or SIGKILL itself) on one rank at the end of one epoch: the fault tests."""

    def __init__(self, rank, epoch, kill=False, stamp=None):
        self.rank, self.epoch, self.kill, self.stamp = rank, epoch, kill, stamp

    def on_epoch_end(self, run, epoch, logs):
        import time

        from gpubp.distributed import ranks as distributed

        if epoch == self.epoch and distributed.rank() == self.rank:
            if self.stamp:  # when the fault happened, for the test to time the shutdown
                with open(self.stamp, "w") as f:
                    f.write(repr(time.time()))
            if self.kill:
                import os
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"planted failure on rank {self.rank} in epoch {epoch}")


class SpreadSGD(SGD):
    """SGD that does not declare its update elementwise: its ranks keep their own
    parameters and every rank gets the whole summed gradient (and the per-kernel step,
    being no built-in optimizer)."""

    elementwise = False


def make_group(spec):
    """The ``distributed=`` of a case's ``"group"``: ``{"reduction": name, "nodes_of": n}``,
    the last standing in for machines of ``n`` ranks each."""
    from gpubp.distributed import ranks as distributed

    comm = distributed.world()
    spec = dict(spec)
    nodes_of = spec.pop("nodes_of", None)
    node = None if nodes_of is None else comm.Split(comm.Get_rank() // nodes_of)
    return distributed.Group(comm, node=node, **spec)


def run(case, distributed=False, rank=0):
    """Train the case's network on its data; returns ``(net, history)``."""
    X, y = make_data(case, rank)
    net = run.net = make_network(case)  # the worker saves it when fit raises
    kwargs = dict(case["fit"])
    if "privacy" in kwargs:  # the keyword arguments of a DPSGD
        kwargs["privacy"] = gpubp.DPSGD(**kwargs["privacy"])
    if case.get("spread_sgd"):
        kwargs["optimizer"] = SpreadSGD(lr=kwargs.pop("lr"), momentum=0.5)
    if distributed and "group" in case:
        distributed = make_group(case["group"])
    elif distributed is True:
        from gpubp.distributed.ranks import group

        distributed = group(True)
    if "fault" in case:
        kwargs["callbacks"] = [RaiseOn(**case["fault"])]
    elif distributed:
        kwargs["callbacks"] = [RecordSum(distributed)]
    history = net.fit(X, y, verbose=0, distributed=distributed, **kwargs)
    return net, history


class RecordSum(Callback):
    """Note how the run reduced its gradients: the strategy's name (and whether the node
    shared the parameters, whether machines were joined), so the test can check that each
    scenario took the path it names."""

    def __init__(self, group):
        self.group = group

    def on_train_end(self, run):
        if not hasattr(self.group, "_reductions"):  # one rank: the single-process path
            RecordSum.last = "identity"
            return
        (found,) = self.group._reductions.values()
        RecordSum.last = f"{found.name} shares_parameters=" \
            f"{getattr(found, 'shares_parameters', None)} " \
            f"cross={getattr(found, 'cross', None) is not None}"


def result_arrays(net, history):
    """The parameters and the History of a run, as ``.npz`` arrays."""
    W, b = net.get_params()
    arrays = {f"W{l}": w for l, w in enumerate(W)}
    arrays.update({f"b{l}": v for l, v in enumerate(b)})
    arrays["history"] = np.frombuffer(json.dumps(history.to_dict()).encode(), dtype=np.uint8)
    arrays["backend"] = np.array(net.backend.name)
    return arrays


def read_result(path):
    """``(params list, history dict)`` of a file written from :func:`result_arrays`."""
    with np.load(path) as data:
        params = [data[k] for k in sorted(k for k in data.files if k[0] in "Wb" and k != "backend")]
        history = json.loads(data["history"].tobytes().decode())
    return params, history


def memory_probe(features, labels, out):
    """Train one epoch on memory-mapped ``.npy`` files; write the peak-RSS growth (JSON).

    Runs on every rank of a launch. The baseline is taken after a warm-up fit on a few
    in-memory rows (JIT compilation, imports), so the growth is what the mapped pass adds:
    ``ru_maxrss`` is the high-water mark of the resident set, file-backed pages included.
    """
    import resource

    from gpubp.distributed import ranks as distributed

    X = np.load(features, mmap_mode="r")
    y = np.load(labels, mmap_mode="r")
    net = gpubp.Network([X.shape[1], 16, 10], hidden="relu", dtype="float32", seed=0)
    net.fit(np.array(X[:256]), np.array(y[:256]), epochs=1, batch_size=64, verbose=0,
            validation_split=0.1, distributed=True)
    net.evaluate(np.array(X[:256]), np.array(y[:256]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    history = net.fit(X, y, epochs=1, batch_size=512, lr=0.01, verbose=0,
                      validation_split=0.1, distributed=True)
    after_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    evaluation = net.evaluate(X, y)
    labels_out = net.predict(X)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    record = {"rank": distributed.rank(), "file_bytes": X.nbytes, "before": before,
              "growth_fit": after_fit - before, "growth": after - before,
              "loss": history["loss"][-1], "eval_loss": evaluation["loss"],
              "predicted": int(labels_out.shape[0])}
    with open(f"{out}/memory.rank{distributed.rank()}.json", "w") as f:
        json.dump(record, f)

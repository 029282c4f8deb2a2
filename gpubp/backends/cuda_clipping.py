"""DP-SGD's per-example clipping on the CUDA backend.

:class:`ExampleClipping` is the part of :class:`gpubp.backends.cuda.CudaBackend` that runs
:meth:`~gpubp.backends.base.Backend.clip_example_rows` in the kernels of
:mod:`gpubp.kernels.cuda_private`. It uses the backend's ``_nb``, ``_stream``, ``xp`` and
its ``_scratch`` dictionary of workspaces.
"""

import numpy as np


class ExampleClipping:
    """The per-example norms and the row clipping of a private step, on the device."""

    def clip_example_rows(self, inputs, deltas, max_grad_norm):
        """DP-SGD's clipping in the kernels of :mod:`gpubp.kernels.cuda_private`: the
        per-example norms summed on the device over the layers, then the rows scaled;
        no synchronisation (a sparse ``a^0``: the array-module code of the base)."""
        if hasattr(inputs[0], "multiply"):  # cupyx sparse: no kernel reads it
            super().clip_example_rows(inputs, deltas, max_grad_norm)
            return
        P = deltas[0].shape[0]
        total = self._norms_workspace(P, deltas[0].dtype)
        self._private_kernels().clip_example_rows(
            [self._nb(a) for a in inputs], [self._nb(d) for d in deltas], max_grad_norm,
            self._nb(total), [self._nb(d, flat=True) for d in deltas], stream=self._stream())

    def _norms_workspace(self, P, dtype):
        """A (P,) view of one workspace that grows to the largest batch: Poisson batches
        change P at every step, and a workspace per size would pile up."""
        key = ("example_norms", np.dtype(dtype))
        array = self._scratch.get(key)
        if array is None or array.size < P:
            array = self._scratch[key] = self.xp.empty(max(P, 2 * getattr(array, "size", 0)),
                                                       dtype=dtype)
        return array[:P]

    @staticmethod
    def _private_kernels():
        from gpubp.kernels import cuda_private  # keeps import gpubp light: numba.cuda loads with the cuda backend only

        return cuda_private

"""``Network.summary()``: a Keras-style table of the layers, and the network's totals.

One row per layer: its name, output shape ``(None, n_l)`` (None: any number of rows),
activation, parameters (``n_{l-1} n_l`` weights and ``n_l`` biases) and dropout rate (of
its inputs, where the network has dropout), then the total, the loss, dtype, device and
backend. ``print(net)`` stays the one-line ``repr``.
"""

COLUMNS = ("Layer", "Output shape", "Activation", "Params", "Dropout")


def _dropout(net, L):
    """Per-layer dropout rates of ``net`` as strings (``"-"`` where there is none)."""
    rate = getattr(net, "dropout", None)  # only networks built with dropout have rates
    if rate is None:
        return ["-"] * L
    rates = list(rate) if isinstance(rate, (list, tuple)) else [rate] * L
    return [f"{float(r):g}" if r else "-" for r in rates] + ["-"] * (L - len(rates))


def rows(net):
    """The table's rows (tuples of strings, :data:`COLUMNS`), the input layer first."""
    table = [("input", f"(None, {net.sizes[0]})", "-", "0", "-")]
    dropout = _dropout(net, net.L)
    for l in range(1, net.L + 1):
        n_in, n_out = net.sizes[l - 1], net.sizes[l]
        name = f"dense_{l}" + (" (output)" if l == net.L else "")
        table.append((name, f"(None, {n_out})", net.activation_names[l - 1],
                      f"{n_in * n_out + n_out:,}", dropout[l - 1]))
    return table


def summary(net, print_fn=None):
    """Print a table of ``net``'s layers and totals (Keras' ``model.summary()``).

    Parameters
    ----------
    net : Network
    print_fn : callable or None
        Called with the whole text (default :func:`print`).

    Returns
    -------
    None
    """
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"print_fn must be callable or None, got {print_fn!r}")
    table = rows(net)
    widths = [max(len(row[i]) for row in [COLUMNS, *table]) for i in range(len(COLUMNS))]

    def line(row):
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()

    rule = "-" * len(line(COLUMNS))
    total = sum(n_in * n_out + n_out for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:]))
    text = "\n".join([
        f"Network {' -> '.join(map(str, net.sizes))}", rule, line(COLUMNS), rule,
        *map(line, table), rule.replace("-", "="),
        f"Total params: {total:,} ({total * net.dtype.itemsize:,} bytes of {net.dtype.name})",
        f"Loss: {net.loss_name}  dtype: {net.dtype.name}  device: {net.device}  "
        f"backend: {net.backend.name}"])
    (print if print_fn is None else print_fn)(text)

"""The algorithm: the network, its flat parameter layout, the compiled-epoch driver and the
diagnostics (trace, gradient flow, gradient check).

Modules:
    network     Network: parameters, workspaces, the public API
    backprop    the algorithm over the Backend contract: load, forward, backward, one step
    reduction   the reduction protocol of a step, and its identity for one process
    checks      the checks of Network's arguments
    layout      the flat θ layout (per-layer views) and the row-block workspaces
    compiled    the driver of the compiled CPU epoch (kernels/cpu_epoch.py)
    metrics     labels and accuracy from the output activations
    trace       every quantity of one backward pass, and the gradient-flow figures
    gradcheck   backprop against central differences
"""

"""The ring-allreduce cost model of docs/distributed.md: ``python benchmarks/allreduce_model.py``.

A data-parallel step on ``N`` ranks computes its share ``B/N`` of the global batch ``B`` and
then sums the gradient (``S`` bytes) with a ring allreduce:

    T_comp = 6 (B/N) W / F                   W = Σ n_{l-1} n_l weights, F FLOP/s per rank
    T_comm = 2 (N−1)/N · S / β + 2 (N−1) α   β bus bandwidth, α latency per ring step

Without overlap the efficiency is ``E = T_comp / (T_comp + T_comm)``, so ``E ≥ 0.9`` needs
``T_comp ≥ 9 T_comm``, i.e. a global batch ``B ≥ 9 N F T_comm / (6 W)``.
"""

NETWORKS = {
    "64-64-10": (64, 64, 10),
    "784-128-10": (784, 128, 10),
    "784-512-512-10": (784, 512, 512, 10),
    "784-1024-1024-10": (784, 1024, 1024, 10),
}

# N ranks, β bus bandwidth (bytes/s), α latency of one ring step (s), F FLOP/s per rank
SYSTEMS = {
    "8 GPUs, NVLink (one node)": {"N": 8, "beta": 400e9, "alpha": 2e-6, "F": 40e12},
    "64 nodes, 400 Gb/s InfiniBand": {"N": 64, "beta": 45e9, "alpha": 5e-6, "F": 40e12},
}


def step_costs(sizes, N, beta, alpha, F, dtype_bytes=4):
    """``(W, S, T_comm)``: weights, gradient bytes and ring-allreduce seconds of one step."""
    W = sum(a * b for a, b in zip(sizes, sizes[1:]))
    S = dtype_bytes * (W + sum(sizes[1:]))
    T_comm = 2 * (N - 1) / N * S / beta + 2 * (N - 1) * alpha
    return W, S, T_comm


def efficiency(B, sizes, N, beta, alpha, F):
    """Parallel efficiency ``T_comp / (T_comp + T_comm)`` at global batch ``B``."""
    W, _, T_comm = step_costs(sizes, N, beta, alpha, F)
    T_comp = 6 * (B / N) * W / F
    return T_comp / (T_comp + T_comm)


def batch_for(target, sizes, N, beta, alpha, F):
    """Smallest global batch whose efficiency is at least ``target`` (no overlap)."""
    W, _, T_comm = step_costs(sizes, N, beta, alpha, F)
    return target / (1 - target) * N * F * T_comm / (6 * W)


def table(target=0.9):
    lines = ["| system | network | gradient | T_comm (bandwidth + latency) | global batch "
             f"for {target:.0%} | per rank |", "|---|---|---|---|---|---|"]
    for system, p in SYSTEMS.items():
        for name, sizes in NETWORKS.items():
            W, S, T_comm = step_costs(sizes, **p)
            bw = 2 * (p["N"] - 1) / p["N"] * S / p["beta"]
            B = batch_for(target, sizes, **p)
            lines.append(f"| {system} | {name} | {S / 1e6:.2f} MB | {T_comm * 1e6:.0f} µs "
                         f"({bw * 1e6:.0f} + {(T_comm - bw) * 1e6:.0f}) | {B:,.0f} | "
                         f"{B / p['N']:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())

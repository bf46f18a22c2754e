"""Development tooling: the local control plane, simulated nodes, traffic and victim programs.

Used by `make cluster-up`, `make demo`, the benchmarks and the tests; never shipped in images.
"""

"""Pure domain logic of the gateway: no actors, no ports, no LMDB.

Everything here is deterministic given its inputs, so it is tested directly and
reused by the benchmarks.
"""

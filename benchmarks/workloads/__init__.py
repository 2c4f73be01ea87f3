"""One module per workload; each defines a function per runtime.

A runtime function takes the workload's size arguments and returns a dict of
metrics. It runs in a fresh subprocess (benchmarks/child.py), so it may leave
the interpreter in any state.
"""

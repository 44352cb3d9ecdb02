"""Benchmarks: latency and peak memory of each backend on the official protocol.

Every configuration runs in a fresh subprocess (``python -m naf_export.bench.worker``) so that
its peak resident set size is its own.
"""

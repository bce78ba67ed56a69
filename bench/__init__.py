"""Benchmarks of jit-lb run against the whole product on this machine: `python -m bench [--quick]`."""

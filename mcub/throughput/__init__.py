"""The throughput benches behind `mcub bench` (see `mcub/bench.py`): one module per bench, the synthetic workloads
they share, and the printed tables."""

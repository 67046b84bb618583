"""The benchmark behind BENCHMARKS.md (`make bench`, `python -m movieservice.bench`).

These machines are shared and noisy, so every comparison is a ratio taken
within one run: the runs compared take turns, round after round (the order
rotating), and the median of the per-round ratios is reported with its
quartiles and the raw numbers. Throughput rows also give each server's CPU
time per request, which moves less than requests per second when a
neighbour takes the core for a while. Servers under test are pinned to core
0; the load generators (h2load for throughput, ghz where latency percentiles
are needed), Redis and FerretDB to core 1.

Modules: `session` starts and stops what a run needs (through the devstack
harness), `load` drives h2load and ghz, `stats` turns rounds into ratios,
`throughput`, `latency` and `zipf` are the measurements, `ceiling` and
`stalled` are the helper processes they start, `report` writes the table.
"""

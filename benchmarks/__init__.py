"""Benchmarks of Understudy, each run from the project root as ``python -m benchmarks.NAME``
(accuracy, latency, stream, decode, auto, train_speed); their results live under
``benchmarks/results/`` (format: ``benchmarks/README.md``)."""

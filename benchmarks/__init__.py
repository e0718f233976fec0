"""Benchmark scripts. Those that use the training or export code run from the repository root as modules
(``python -m benchmarks.NAME``), so that ``train`` and ``export`` import without editing ``sys.path``."""

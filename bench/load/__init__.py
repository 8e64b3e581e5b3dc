"""The load test: `python -m bench.load` or `python bench/load/run.py` (see run.py)."""

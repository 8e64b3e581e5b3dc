"""The load test: `python -m bench.load` or `python bench/load/run.py` (see run.py)."""
from __future__ import annotations

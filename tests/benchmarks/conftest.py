import sys
from pathlib import Path

# The fake of the HTTP contract lives beside the evaluator's tests; the benchmark tests drive it too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "evaluation"))

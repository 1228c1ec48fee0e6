"""Cost of the bounded readers (madopd.safe_io): read_jsonl_rows vs a plain json.loads loop
over the same JSONL file (20,000 rows, ~6.7 MB). Prints best-of-3 CPU seconds and the ratio.

    python benchmarks/bench_readers.py
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from madopd.tasks.jsonl import read_jsonl_rows


def _best_cpu(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        with path.open("w") as f:
            for i in range(20_000):
                row = {"id": i, "conversations": [
                    {"from": "user", "value": "x" * rng.randint(50, 400)},
                    {"from": "assistant", "value": "[add(1,2)]"}]}
                f.write(json.dumps(row) + "\n")
        plain = _best_cpu(lambda: [json.loads(x) for x in path.read_text().splitlines()
                                   if x.strip()])
        bounded = _best_cpu(lambda: read_jsonl_rows(path))
    print(f"plain json.loads: {plain:.3f} s CPU; read_jsonl_rows (bounded): {bounded:.3f} s CPU")
    print(f"ratio bounded/plain: {bounded / plain:.2f}")


if __name__ == "__main__":
    main()

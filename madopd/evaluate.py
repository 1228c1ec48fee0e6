"""Scoring code and tool calls: pass@k (unbiased), best-of-n, the sandboxed code harness.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", Eq. 1): with n
samples of which c pass, the probability that at least one of k samples drawn without
replacement passes is ``1 - C(n-c, k) / C(n, k)``. We evaluate it as the product
``1 - Π_{i=n-c+1}^{n} (1 - k/i)``, which never forms the huge binomials.

The code harness turns (problem, model response) into a candidate program ``prompt +
completion`` and hands it with the problem's tests to ``madopd.sandbox.verify`` — never run in
this process, and scored by a harness the candidate cannot reach (the tests run there, after
the candidate's definitions are loaded in another process; see docs/sandbox.md). Model output is untrusted: an unparsable response is a failed sample, counted in
the summary, never an exception.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from madopd.errors import ValueRangeError
from madopd.sandbox import Limits
from madopd.sandbox.verify import TestCase, verify_cases


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: n samples, c correct, k drawn (1 ≤ k ≤ n)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise ValueRangeError(f"pass_at_k expects ints, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueRangeError(f"pass_at_k needs n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueRangeError(f"pass_at_k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(counts: list[tuple[int, int]], ks: list[int]) -> tuple[dict[str, float], list[int]]:
    """Average pass@k over problems given (n, c) per problem.

    Returns ({"pass@k": value}, skipped_ks): a k larger than some problem's n cannot be
    estimated without bias, so it is left out and listed in ``skipped_ks`` (callers report it).
    """
    if not counts:
        return {}, list(ks)
    out, skipped = {}, []
    for k in ks:
        if any(n < k for n, _ in counts):
            skipped.append(k)
            continue
        out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
    return out, skipped


# ---------------------------------------------------------------------------------------------
@dataclass
class CodeProblem:
    """A function-completion problem (HumanEval layout).

    ``prompt`` is the code up to the function body (signature + docstring), ``test`` defines
    ``check(candidate)``, ``entry_point`` the function name. ``canonical_solution`` is a body
    that passes (optional; used by the harness self-check).
    """

    task_id: str
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


_FENCE = re.compile(r"```[ \t]*(?:python|py|Python|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(response: str) -> str:
    """The code in a chat response: the first fenced block if any, else the whole text."""
    match = _FENCE.search(response)
    return match.group(1) if match else response


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name
               for node in tree.body)


def completion_from_response(problem: CodeProblem, response: str) -> tuple[str, str]:
    """Turn a model response into text appended to ``problem.prompt``; returns (text, mode).

    mode "function": the response (or its first code block) defines ``entry_point`` at top
    level, so it is appended after the prompt and its definition replaces the prompt's
    docstring-only one (the prompt still contributes imports and helpers).
    mode "body": anything else is taken as the body continuation (HumanEval's original format);
    garbage simply fails to compile in the sandbox and counts as a wrong sample.
    """
    code = extract_code(response)
    if _defines(code, problem.entry_point):
        # A prompt may end at a bare ``def`` line (no docstring): give it a body so the
        # program parses; the response's definition, coming later, is the one called.
        for glue in ("\n", "    pass\n\n"):
            if _parses(problem.prompt + glue + code):
                return glue + code, "function"
        return "\n" + code, "function"
    return code, "body"


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def check_program(problem: CodeProblem, completion: str) -> TestCase:
    """The verifier case for one sample: the candidate ``prompt + completion`` (untrusted, run in
    the worker), the problem's tests and ``check(entry_point)`` in the harness, with the prompt
    as trusted prelude (its helpers, e.g. HumanEval's ``poly``, are the ones the tests use)."""
    return TestCase(candidate=f"{problem.prompt}{completion}\n", tests=problem.test,
                    entry_point=problem.entry_point, prelude=problem.prompt)


@dataclass
class CodeEvalResult:
    records: list[dict]  # one per sample: task_id, sample, passed, status, reason, mode, ...
    problems: list[dict]  # one per problem: task_id, n, c, pass@k...
    summary: dict  # pass@k means, best_of_n, status counts, counters


def evaluate_code(problems: list[CodeProblem], responses: list[list[str]], *,
                  ks: list[int] = (1,), limits: Limits | None = None, workers: int = 2,
                  progress: bool = False, raw_completions: bool = False) -> CodeEvalResult:
    """Score ``responses[i][j]`` (sample j for problem i) in the sandbox.

    ``raw_completions=True`` appends the responses verbatim (already a body/continuation, like
    canonical solutions); otherwise ``completion_from_response`` extracts the code first.
    """
    if len(problems) != len(responses):
        raise ValueRangeError(f"evaluate_code: {len(problems)} problems but {len(responses)} "
                              "response lists (expected one list per problem)")
    limits = limits or Limits()
    programs, index, modes = [], [], []
    for i, (prob, samples) in enumerate(zip(problems, responses)):
        for j, resp in enumerate(samples):
            text = resp if isinstance(resp, str) else ""  # non-text output counts as wrong
            comp, mode = (text, "raw") if raw_completions else completion_from_response(prob, text)
            if not isinstance(resp, str):
                mode = "non-text"
            programs.append(check_program(prob, comp))
            index.append((i, j))
            modes.append(mode)
    results = verify_cases(programs, limits=limits, workers=workers, progress=progress)
    records, per_problem = [], [[0, 0] for _ in problems]
    status_counts: Counter[str] = Counter()
    for (i, j), mode, res, resp in zip(index, modes, results, (r for s in responses for r in s)):
        passed = res.passed
        per_problem[i][0] += 1
        per_problem[i][1] += int(passed)
        status_counts[f"{res.status}:{res.reason}" if res.reason else res.status] += 1
        records.append({
            "task_id": problems[i].task_id, "sample": j, "passed": passed, "status": res.status,
            "reason": res.reason, "detail": res.detail, "mode": mode,
            "duration": round(res.run.duration, 4), "isolation": res.run.isolation,
            "response": resp if isinstance(resp, str) else repr(resp),
            "stderr_tail": res.run.stderr[-500:], "truncated": res.run.truncated,
        })
    counts = [(n, c) for n, c in per_problem if n > 0]
    means, skipped = mean_pass_at_k(counts, list(ks))
    prob_rows = []
    for prob, (n, c) in zip(problems, per_problem):
        row = {"task_id": prob.task_id, "n": n, "c": c}
        for k in ks:
            if 1 <= k <= n:
                row[f"pass@{k}"] = pass_at_k(n, c, k)
        prob_rows.append(row)
    summary = {
        "problems": len(problems), "samples": len(programs),
        **means,
        "best_of_n": (sum(c > 0 for _, c in counts) / len(counts)) if counts else 0.0,
        "mean_sample_accuracy": (sum(c for _, c in counts) / max(1, sum(n for n, _ in counts))),
        "skipped_k": skipped, "status_counts": dict(status_counts),
        "modes": dict(Counter(modes)), "limits": asdict(limits),
    }
    return CodeEvalResult(records, prob_rows, summary)


# ---------------------------------------------------------------------------------------------
def generate_samples(model: Any, chats: list, sampling: Any, *, n_samples: int = 1,
                     batch_size: int = 8, progress: bool = False) -> list[list[str]]:
    """``n_samples`` replies per chat from anything with ``generate(chats, Sampling)``.

    Returns ``[len(chats)][n_samples]`` texts. Each chat is repeated ``n_samples`` times in the
    batches; with a seed, batch b uses ``seed + b`` so repeated runs are reproducible.
    """
    if n_samples < 1 or batch_size < 1:
        raise ValueRangeError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
    flat = [c for c in chats for _ in range(n_samples)]
    out: list[str] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(flat), desc="generate", unit="sample")
    try:
        for b, start in enumerate(range(0, len(flat), batch_size)):
            chunk = flat[start:start + batch_size]
            samp = sampling
            if getattr(sampling, "seed", None) is not None:
                samp = replace(sampling, seed=sampling.seed + b)
            texts = model.generate(chunk, samp)
            if len(texts) != len(chunk):
                raise ValueRangeError(f"model.generate returned {len(texts)} texts for {len(chunk)} chats")
            out.extend(texts)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return [out[i * n_samples:(i + 1) * n_samples] for i in range(len(chats))]


def evaluate_model(model: Any, benchmark: Any, *, limit: int | None = None, n_samples: int = 1,
                   sampling: Any = None, ks: list[int] = (1,), workers: int = 2,
                   batch_size: int = 8, progress: bool = False):
    """Generate with ``model`` on ``benchmark.states(limit)`` and score: returns (states, BenchResult).

    ``model`` is anything with ``generate(chats, Sampling) -> list[str]`` (HFTeacher,
    VLLMServerTeacher, a student); ``benchmark`` comes from ``madopd.bench.get_benchmark``.
    """
    from madopd.types import Sampling

    sampling = sampling or Sampling(greedy=n_samples == 1, max_new_tokens=512)
    states = benchmark.states(limit)
    responses = generate_samples(model, [s.messages for s in states], sampling,
                                 n_samples=n_samples, batch_size=batch_size, progress=progress)
    return states, benchmark.score(states, responses, ks=list(ks), workers=workers,
                                   progress=progress)

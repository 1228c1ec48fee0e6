"""BFCL v4 (Berkeley Function-Calling Leaderboard) from the ``bfcl-eval`` package, offline.

What we take from the package: its data files, its loader (function docs with the language
hint, exactly as the leaderboard prompts them), its prompt constants (the default "classic /
plaintext / python" system prompt) and its own AST checker (``ast_checker``), plus
``is_function_calling_format_output``. What we do ourselves, and why:

* **Decoding the model's reply** (``decode_calls``): the student answers in BFCL's default
  Python format ``[func(a=1, b="x"), other(c=[1, 2])]``. BFCL's own decoder calls ``eval`` on
  parts of the model output (binary operators, lambdas), which we must never do with untrusted
  text, so we re-implement its semantics with ``ast`` only: literal values, names -> their
  identifier string, nested keyword calls -> ``{name: {...}}``, bounded numeric arithmetic.
* **Importing the checker without the leaderboard's API clients**: ``ast_checker`` imports
  ``bfcl_eval.constants.model_config`` only to read one flag (``underscore_to_dot``) for the
  model name it is given; that module imports every vendor SDK (openai, anthropic, cohere, ...,
  and numpy==1.26 through the package pins). When it is not importable we give the checker a
  one-entry stand-in for the prompt-mode model key we pass (``underscore_to_dot=False``) while
  importing it, then remove the stand-in from ``sys.modules``. Counted in ``INFO``.
* **Aggregation** (``bfcl_overall``): re-implemented from ``eval_runner_helper.py``
  (``generate_leaderboard_csv``): non-live = unweighted mean of {simple (= unweighted mean of
  python/java/javascript), multiple, parallel, parallel_multiple}; live = count-weighted mean of
  the four live AST categories; irrelevance = unweighted mean of irrelevance and
  live_irrelevance; multi-turn = unweighted mean of its four categories; overall =
  10·non-live + 10·live + 10·irrelevance + 30·multi-turn + 40·agentic (weights normalised), a
  missing category counting as 0, exactly as BFCL does. We also report the same formula over
  the evaluated groups only (``overall_evaluated``), clearly labelled.

Supported categories: every single-turn one (``SUPPORTED``; Java/JavaScript answers carry their
arguments as source strings, see ``bfcl_lang``) and, through ``bfcl_multi_turn``, the four
multi-turn ones. Not supported (reported as missing, 0 in BFCL's overall): web_search and
memory (live web services, embedding models).
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import io
import json
import keyword
import math
import sys
import tokenize
import types
from collections import Counter
from pathlib import Path
from typing import Any

from madopd.bench import bfcl_lang
from madopd.errors import DataError, MissingExtraError

SUPPORTED = [
    "simple_python", "simple_java", "simple_javascript",
    "multiple", "parallel", "parallel_multiple", "irrelevance",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
    "live_irrelevance", "live_relevance",
]
RELEVANCE = {"irrelevance", "live_irrelevance", "live_relevance"}
# Any prompt-mode model key of BFCL's MODEL_CONFIG_MAPPING with underscore_to_dot=False: the
# checker reads only that flag (dotted function names are compared as they are).
_CHECKER_MODEL_KEY = "DeepSeek-V3.2-Exp"
INFO: Counter[str] = Counter()  # "model_config_standin", decode/check failures, ...

NO_CALL_REFERENCE = "None of the given functions can be used for this request."


def _require_package() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        err = MissingExtraError("bfcl-eval", "bench", "the BFCL benchmark")
        # A plain install pins numpy==1.26.4 and ~60 vendor SDKs; we need none of them.
        err.args = (f"{err.args[0]}; recommended: .ci/setup_bench.sh, i.e. "
                    "pip install --no-deps bfcl-eval==2026.3.23",)
        raise err
    return Path(next(iter(spec.submodule_search_locations)))


_CHECKER: dict[str, Any] = {}


def _checker() -> dict[str, Any]:
    """{'ast_checker', 'Language', 'is_format_ok', 'utils', 'prompts'} from bfcl_eval (cached)."""
    if _CHECKER:
        return _CHECKER
    _require_package()
    name = "bfcl_eval.constants.model_config"
    standin = None
    if name not in sys.modules and "bfcl_eval.eval_checker.ast_eval.ast_checker" not in sys.modules:
        try:
            importlib.import_module(name)
        except ImportError:  # vendor SDKs not installed: see the module docstring
            standin = types.ModuleType(name)
            standin.MODEL_CONFIG_MAPPING = {
                _CHECKER_MODEL_KEY: types.SimpleNamespace(underscore_to_dot=False)}
            sys.modules[name] = standin
            INFO["model_config_standin"] += 1
    try:
        checker_mod = importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")
    finally:
        if standin is not None:
            del sys.modules[name]
    utils = importlib.import_module("bfcl_eval.utils")
    enums = importlib.import_module("bfcl_eval.constants.enums")
    prompts = importlib.import_module("bfcl_eval.constants.default_prompts")
    _CHECKER.update(ast_checker=checker_mod.ast_checker, Language=enums.Language,
                    is_format_ok=utils.is_function_calling_format_output, utils=utils,
                    prompts=prompts)
    return _CHECKER


# --------------------------------------------------------------------------------------------
# Prompt: BFCL's default system prompt (ret_fmt=python, no tag, json docs, plaintext, classic).
def system_prompt(functions: list[dict]) -> str:
    p = _checker()["prompts"]
    style = p.PROMPT_STYLE_TEMPLATES["classic"]
    return p.PROMPT_TEMPLATE_MAPPING["plaintext"].format(
        persona=style["persona"], task=style["task"],
        tool_call_format=style["tool_call_no_tag"].format(
            output_format=p.OUTPUT_FORMAT_MAPPING["python"], param_types=p.PARAM_TYPE_MAPPING["python"]),
        multiturn_behavior=style["multiturn_behavior"],
        available_tools=style["available_tools"].format(
            format="json", functions=json.dumps(functions, indent=4)))


def build_chat(question: list[dict], functions: list[dict]) -> list[dict]:
    """BFCL's system_prompt_pre_processing_chat_model: prepend to an existing system message."""
    chat = [dict(m) for m in question]
    sys_text = system_prompt(functions)
    if chat and chat[0]["role"] == "system":
        chat[0]["content"] = sys_text + "\n\n" + chat[0]["content"]
    else:
        chat.insert(0, {"role": "system", "content": sys_text})
    return chat


# --------------------------------------------------------------------------------------------
# Decoding the model's reply, ast only (never eval).
class DecodeError(ValueError):
    """The reply is not a list of function calls in BFCL's Python format."""


_MAX_NUMBER = 1e18  # bounded arithmetic: BFCL evaluates e.g. `3*4`; we refuse huge results


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _value(node.operand)
        if not isinstance(inner, (int, float)) or isinstance(inner, bool):
            raise DecodeError("unary +/- on a non-number")
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.List):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise DecodeError("**unpacking in a dict")
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Name):
        return node.id  # BFCL: a bare name stands for its identifier string
    if isinstance(node, ast.Call):
        return _call(node) if node.keywords else ast.unparse(node)
    if isinstance(node, ast.Subscript):
        return ast.unparse(node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _value(node.left), _value(node.right)
        nums = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (left, right))
        if not nums:
            raise DecodeError("arithmetic on non-numbers")
        if isinstance(node.op, ast.Div) and right == 0:
            raise DecodeError("division by zero")
        out = {ast.Add: lambda: left + right, ast.Sub: lambda: left - right,
               ast.Mult: lambda: left * right, ast.Div: lambda: left / right}[type(node.op)]()
        if not math.isfinite(out) or abs(out) > _MAX_NUMBER:
            raise DecodeError("arithmetic result out of range")
        return out
    raise DecodeError(f"unsupported value {type(node).__name__}")


def _call(node: ast.Call) -> dict:
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise DecodeError("function name must be a dotted identifier")
    parts.append(func.id)
    if node.args:
        raise DecodeError("positional arguments (BFCL expects keyword arguments)")
    args = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise DecodeError("**kwargs unpacking")
        args[_unescape(kw.arg)] = _value(kw.value)
    return {".".join(reversed(parts)): args}


def decode_calls(text: str, *, max_chars: int = 20000) -> list[dict]:
    """``"[f(a=1), g(b='x')]"`` -> ``[{"f": {"a": 1}}, {"g": {"b": "x"}}]`` (BFCL's format).

    Same normalisation as BFCL's ``default_decode_ast_prompting`` (strip backticks, newlines and
    spaces, add missing brackets, strip wrapping single quotes); raises DecodeError otherwise.
    """
    if not isinstance(text, str):
        raise DecodeError(f"expected text, got {type(text).__name__}")
    if len(text) > max_chars:
        raise DecodeError(f"reply longer than {max_chars} characters")
    text = text.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    source = text.strip().strip("'")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        escaped = _escape_keyword_args(source)  # Java/JS parameters named `from`, `class`, ...
        if escaped is None:
            raise DecodeError(f"not Python syntax: {type(exc).__name__}") from None
        try:
            tree = ast.parse(escaped, mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            raise DecodeError(f"not Python syntax: {type(exc).__name__}") from None
    body = tree.body
    try:
        if isinstance(body, ast.Call):
            calls = [_call(body)]
        elif not isinstance(body, (ast.List, ast.Tuple)):
            raise DecodeError("expected a list of calls")
        elif not all(isinstance(e, ast.Call) for e in body.elts):
            raise DecodeError("every list element must be a function call")
        else:
            calls = [_call(e) for e in body.elts]
    except RecursionError:
        raise DecodeError("nesting too deep") from None
    return calls


_KW_SUFFIX = "__madopd_kw"


def _escape_keyword_args(source: str) -> str | None:
    """Rename keyword arguments that are Python keywords (``from=1`` -> ``from__madopd_kw=1``),
    using the tokenizer so string contents are never touched; None when there are none."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    changed = False
    for i, tok in enumerate(toks):
        nxt = next((t for t in toks[i + 1:] if t.type not in (tokenize.NL, tokenize.COMMENT)), None)
        prv = next((t for t in reversed(toks[:i]) if t.type not in (tokenize.NL, tokenize.COMMENT)), None)
        if (tok.type == tokenize.NAME and keyword.iskeyword(tok.string) and nxt is not None
                and nxt.string == "=" and prv is not None and prv.string in ("(", ",")):
            toks[i] = tok._replace(string=tok.string + _KW_SUFFIX)
            changed = True
    return tokenize.untokenize(toks) if changed else None


def _unescape(name: str) -> str:
    return name[: -len(_KW_SUFFIX)] if name.endswith(_KW_SUFFIX) else name


def encode_calls(calls: list[dict]) -> str:
    """The inverse of ``decode_calls``: ``[{"f": {"a": 1}}] -> "[f(a=1)]"``."""
    rendered = []
    for call in calls:
        (name, args), = call.items()
        rendered.append(f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")")
    return "[" + ", ".join(rendered) + "]"


# --------------------------------------------------------------------------------------------
# Ground truth -> one concrete answer (the first allowed option of every parameter).
_OMIT = object()


def _choose(options: Any) -> Any:
    if not isinstance(options, list):
        raise DataError(f"possible answer options must be a list, got {options!r:.80}")
    for opt in options:
        if opt != "":  # "" marks an optional parameter that may be left out
            return _realise(opt)
    return _OMIT


def _realise(value: Any) -> Any:
    if isinstance(value, dict):  # nested dict: each key holds a list of options
        out = {}
        for k, opts in value.items():
            chosen = _choose(opts) if isinstance(opts, list) else opts
            if chosen is not _OMIT:
                out[k] = chosen
        return out
    if isinstance(value, list):
        return [_realise(v) for v in value]
    return value


def _doc(functions: list[dict], name: str) -> dict | None:
    return next((f for f in functions if f["name"] == name), None)


def gold_issues(ground_truth: list[dict], functions: list[dict]) -> list[str]:
    """Why a ground-truth answer contradicts its own function docs (then no answer can pass
    BFCL's checker): unknown function, required parameter absent or with no allowed value,
    parameter unknown to the docs that may not be left out. [] = consistent."""
    issues = []
    for call in ground_truth:
        (name, params), = call.items()
        doc = _doc(functions, name)
        if doc is None:
            issues.append(f"{name}: not among the functions")
            continue
        props = doc["parameters"].get("properties", {})
        for req in doc["parameters"].get("required", []):
            if req not in params:
                issues.append(f"{name}.{req}: required but absent from the ground truth")
            elif params[req] == []:
                issues.append(f"{name}.{req}: required but no allowed value")
        for p, options in params.items():
            if p not in props and "" not in options:
                issues.append(f"{name}.{p}: not a documented parameter")
    return issues


def reference_calls(ground_truth: list[dict], functions: list[dict]) -> list[dict]:
    """One concrete answer: per parameter its first allowed value; an optional (or undocumented)
    parameter whose options allow "" is left out when "" comes first or it is undocumented."""
    calls = []
    for call in ground_truth:
        (name, params), = call.items()
        doc = _doc(functions, name) or {"parameters": {}}
        props = doc["parameters"].get("properties", {})
        required = set(doc["parameters"].get("required", []))
        args = {}
        for p, options in params.items():
            if p not in props and "" in options:
                continue
            chosen = _choose(options)
            if chosen is _OMIT:
                if p in required and options:
                    args[p] = _realise(options[0])
                continue
            args[p] = chosen
        calls.append({name: args})
    return calls


_PLACEHOLDER = {"string": "x", "integer": 1, "float": 1.0, "number": 1.0, "boolean": True,
                "array": [], "tuple": [], "dict": {}, "object": {}, "any": "x"}


def synthetic_call(functions: list[dict]) -> list[dict]:
    """A well-formed call of the first function with placeholder required arguments (used as
    the 'reference' of live_relevance, which has no ground truth: any call counts)."""
    fn = functions[0]
    props = fn["parameters"].get("properties", {})
    args = {p: _PLACEHOLDER.get(props.get(p, {}).get("type", "string"), "x")
            for p in fn["parameters"].get("required", [])}
    return [{fn["name"]: args}]


# --------------------------------------------------------------------------------------------
def judge(category: str, functions: list[dict], ground_truth: list[dict] | None,
          response: str) -> tuple[bool, str]:
    """(correct, error_type) for one reply, with BFCL's rules per category. Never raises."""
    try:
        decoded = decode_calls(response)
        decode_error = ""
    except DecodeError as exc:
        decoded, decode_error = None, f"decode:{exc}"
    if category in RELEVANCE:
        has_call = decoded is not None and len(decoded) > 0
        if "irrelevance" in category:
            return (not has_call), ("" if not has_call else "irrelevance:decoder_success")
        return has_call, ("" if has_call else "relevance:decoder_failed")
    if decoded is None:
        INFO["decode_failed"] += 1
        return False, decode_error
    c = _checker()
    if not c["is_format_ok"](decoded):
        return False, "ast_decoder:decoder_wrong_output_format"
    language = {"java": c["Language"].JAVA, "javascript": c["Language"].JAVASCRIPT}.get(
        bfcl_lang.LANG_CATEGORIES.get(category, ""), c["Language"].PYTHON)
    try:
        result = c["ast_checker"](copy.deepcopy(functions), decoded, ground_truth,
                                  language, category, _CHECKER_MODEL_KEY)
    except Exception as exc:  # the checker choking on odd (untrusted) values = wrong answer
        INFO["checker_exception"] += 1
        return False, f"checker_exception:{type(exc).__name__}"
    return bool(result["valid"]), ("" if result["valid"] else str(result.get("error_type")))


# --------------------------------------------------------------------------------------------
def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


_SIMPLE = ["simple_python", "simple_java", "simple_javascript"]
_LIVE = ["live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"]
_MULTI_TURN = ["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param",
               "multi_turn_long_context"]
_GROUP_WEIGHTS = {"non_live": 10, "live": 10, "irrelevance": 10, "multi_turn": 30, "agentic": 40}


def _groups(acc: dict[str, float], count: dict[str, int], only_evaluated: bool) -> dict[str, float | None]:
    """BFCL's group scores. only_evaluated=False: a missing category is 0 (BFCL's rule);
    True: means run over evaluated categories only, and a group with none is None."""
    def mean(parts: list) -> float | None:
        parts = [p for p in parts if p is not None] if only_evaluated else parts
        return _mean(parts) if parts else None

    def cat(c: str) -> float | None:
        return acc.get(c) if only_evaluated else acc.get(c, 0.0)

    live_n = sum(count.get(c, 0) for c in _LIVE if c in acc)
    live = (sum(acc[c] * count.get(c, 0) for c in _LIVE if c in acc) / live_n) if live_n else (
        None if only_evaluated else 0.0)
    web = mean([cat("web_search_base"), cat("web_search_no_snippet")])
    memory = mean([cat("memory_kv"), cat("memory_vector"), cat("memory_rec_sum")])
    return {
        "non_live": mean([mean([cat(c) for c in _SIMPLE]), cat("multiple"), cat("parallel"),
                          cat("parallel_multiple")]),
        "live": live,
        "irrelevance": mean([cat("irrelevance"), cat("live_irrelevance")]),
        "multi_turn": mean([cat(c) for c in _MULTI_TURN]),
        "agentic": mean([web, memory]),
    }


def bfcl_overall(acc: dict[str, float], count: dict[str, int]) -> dict[str, Any]:
    """BFCL's leaderboard aggregation (eval_runner_helper.generate_leaderboard_csv).

    ``overall`` = Σ w_g·group_g / Σ w_g with w = 10 non-live, 10 live, 10 irrelevance,
    30 multi-turn, 40 agentic, a missing category counting as 0 (BFCL's rule, so a partial
    run is bounded by the weight it covers). ``overall_evaluated`` applies the same formula to
    the evaluated categories and groups only (not a leaderboard number: labelled as such).
    """
    full = _groups(acc, count, only_evaluated=False)
    part = _groups(acc, count, only_evaluated=True)
    evaluated = [g for g, v in part.items() if v is not None]
    w_eval = sum(_GROUP_WEIGHTS[g] for g in evaluated)
    return {
        "overall": sum(full[g] * w for g, w in _GROUP_WEIGHTS.items()) / sum(_GROUP_WEIGHTS.values()),
        **full,
        "overall_evaluated": (sum(part[g] * _GROUP_WEIGHTS[g] for g in evaluated) / w_eval
                              if w_eval else 0.0),
        "groups_evaluated": evaluated,
    }

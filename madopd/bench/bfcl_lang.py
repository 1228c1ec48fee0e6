"""BFCL's Java and JavaScript categories: answers carry every argument as a source string.

BFCL prompts these categories with the parameter types rewritten to "string" ("This is Java
long type parameter in string representation", ...), and its checker converts each string back
with ``java_type_converter`` / ``js_type_converter`` before comparing with the gold values. So a
student answers ``[Cls.method(id="42L", ids="new ArrayList<>(Arrays.asList(1, 2))")]`` in the
usual Python-call format; ``literal(...)`` renders a gold value the way those converters read it
(used for the reference answers). ``gold_issues`` lists gold answers no string can match.
"""

from __future__ import annotations

import json
from typing import Any

LANG_CATEGORIES = {"simple_java": "java", "simple_javascript": "javascript"}


def _java_scalar(v: Any, t: str | None) -> str:
    if t == "boolean" or isinstance(v, bool):
        return "true" if v else "false"
    if t == "long":
        return f"{v}L"
    if t == "float":
        return f"{v}f"
    if t == "char":
        return f"'{v}'"
    if t == "String":
        return f'"{v}"'  # inside collections the converter strips the quotes
    return str(v)


def java_literal(v: Any, doc: dict) -> str:
    """Java source text for gold value ``v`` of a parameter documented as ``doc``."""
    t = doc.get("type", "any")
    nested = (doc.get("items") or {}).get("type")
    if t == "ArrayList" and isinstance(v, list):
        return "new ArrayList<>(Arrays.asList(" + ", ".join(_java_scalar(x, nested) for x in v) + "))"
    if t == "Array" and isinstance(v, list):
        inner = "any" if nested == "String" else nested  # Array elements are converted unquoted
        return f"new {nested or 'Object'}[]{{" + ", ".join(_java_scalar(x, inner) for x in v) + "}"
    if t == "HashMap" and isinstance(v, dict):
        puts = " ".join(f'put("{k}", {_java_scalar(x, "String" if isinstance(x, str) else None)});'
                        for k, x in v.items())
        return "new HashMap<String, Object>() {{ " + puts + " }}"
    if t in ("String", "any"):
        return str(v)
    return _java_scalar(v, t)


def js_literal(v: Any, doc: dict) -> str:
    """JavaScript source text for gold value ``v`` (what ``js_type_converter`` reads back)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(js_literal(x, {}) for x in v) + "]"
    if isinstance(v, dict):
        return json.dumps(v)
    return str(v)


def literal(language: str, v: Any, doc: dict) -> str:
    return java_literal(v, doc) if language == "java" else js_literal(v, doc)


def gold_issues(language: str, ground_truth: list[dict], functions: list[dict]) -> list[str]:
    """Java gold values that BFCL's own converter can never produce (so every answer fails)."""
    if language != "java":
        return []
    issues = []
    docs = {f["name"]: f["parameters"].get("properties", {}) for f in functions}
    for call in ground_truth:
        (name, params), = call.items()
        for p, options in params.items():
            doc = docs.get(name, {}).get(p, {})
            nested = (doc.get("items") or {}).get("type")
            for opt in options:
                # items typed String/any are converted to str, so other gold items never match
                if doc.get("type") in ("ArrayList", "Array") and nested in ("String", "any") \
                        and isinstance(opt, list) and not all(isinstance(x, str) for x in opt):
                    issues.append(f"{name}.{p}: a {nested} list whose gold items are not all strings")
                if isinstance(opt, dict) and not all(isinstance(x, list) for x in opt.values()):
                    issues.append(f"{name}.{p}: dict gold value without option lists")
    return issues

"""Bounded readers: every JSON, YAML, JSONL(.gz) and safetensors input passes through here.

A file a user or a run folder hands in is hostile until checked (docs/threat-model.md).
Python's parsers are unbounded in ways that turn a small file into a traceback or an
allocation of gigabytes; each reader below bounds one of them and fails as one ``DataError``
line naming the file (and line):

- JSON: size cap, nesting-depth cap (checked before parsing: ``json`` recurses in C and
  raises ``RecursionError`` at about 1000 levels, and our consumers recurse too), duplicate
  object keys refused (``json`` silently keeps the last one).
- YAML: size cap, aliases expanded at most ``max_nodes`` nodes (a 1 KB "billion laughs"
  expands to 10^9), recursive anchors refused (``&a [*a]`` builds a cyclic list that
  ``json.dumps`` rejects with ValueError), depth cap, duplicate mapping keys refused.
- JSONL(.gz): each line at most ``max_line_bytes``, the decompressed total at most
  ``max_total_bytes`` (a 5 MB gzip bomb is one 5 GB line).
- safetensors: header length and JSON checked, every tensor's dtype, shape and byte range
  consistent with the file, before the library maps it.

Layering: this module sits just above ``nofollow`` and ``errors`` (models, tasks, integrity
and runs all read through it; it imports nothing else of madopd).

The limits are module constants a caller may override per call; each is far above what
madopd writes itself (a trainer state is a few KB of JSON, a config a few hundred bytes).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from madopd import nofollow
from madopd.errors import DataError

MAX_JSON_BYTES = 256 << 20        # one JSON document (a step record decompressed, a config)
MAX_JSON_DEPTH = 64               # madopd's own files nest < 12 deep
MAX_YAML_BYTES = 4 << 20
MAX_YAML_NODES = 100_000          # nodes after alias expansion
MAX_LINE_BYTES = 64 << 20         # one JSONL row
MAX_TOTAL_BYTES = 8 << 30         # one JSONL file, decompressed
MAX_SAFETENSORS_HEADER = 100 << 20

# a JSON string (escapes included); what is left outside strings holds every bracket
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


# ----------------------------------------------------------------------------- JSON

def json_depth(raw: bytes, chunk: int = 1 << 22) -> int:
    """Deepest bracket nesting of a JSON text (0 for a scalar), without recursion: strings
    are blanked out, then a running sum of ``[{`` minus ``]}`` is taken in numpy, a chunk
    at a time (memory stays O(chunk) for a file of any size)."""
    outside = np.frombuffer(_JSON_STRING.sub(b'""', raw), np.uint8)
    level, deepest = 0, 0
    for start in range(0, outside.size, chunk):
        part = outside[start:start + chunk]
        step = np.isin(part, (91, 123)).astype(np.int32) - np.isin(part, (93, 125))
        run = level + np.cumsum(step, dtype=np.int64)
        deepest = max(deepest, int(run.max()))
        level = int(run[-1])
    return deepest


def _no_duplicates(where: str, line: int | None):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise DataError(f"duplicate key {k!r} in one JSON object (which value is meant "
                                "is ambiguous)", path=where, line=line, field=k)
            out[k] = v
        return out
    return hook


def loads_json(raw: bytes | str, where: str, *, line: int | None = None,
               max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
               what: str = "JSON") -> Any:
    """``json.loads`` bounded in size and depth, refusing duplicate keys (DataError naming
    ``where`` and ``line``). NaN/Infinity literals are accepted (madopd's metrics use them);
    numbers too large for a float become inf, which value checks downstream refuse."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise DataError(f"{what} of {len(data)} bytes exceeds the limit of {max_bytes}",
                        path=where, line=line)
    # fewer opening brackets than the limit cannot nest deeper: skip the scan (most rows)
    opened = data.count(b"[") + data.count(b"{")
    depth = json_depth(data) if opened > max_depth else 0
    if depth > max_depth:
        raise DataError(f"{what} nested {depth} levels deep (limit {max_depth})", path=where,
                        line=line)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = line if line is not None else data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"not UTF-8 (byte {exc.start})", path=where, line=at) from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates(where, line))
    except json.JSONDecodeError as exc:
        cut = " (the file is truncated)" if exc.pos >= len(text.rstrip()) else ""
        raise DataError(f"invalid {what}{cut}: {exc.msg} at column {exc.colno}", path=where,
                        line=line if line is not None else exc.lineno) from None
    except RecursionError:  # the depth check makes this unreachable; kept as a guard
        raise DataError(f"{what} nested too deeply", path=where, line=line) from None


def read_json_file(path: Path, what: str = "JSON", *, follow: bool = True,
                   max_bytes: int = MAX_JSON_BYTES) -> Any:
    """JSON of a UTF-8 file through ``loads_json`` (size, depth, duplicate keys); DataError
    naming the file and line when it is not. A FIFO or device is refused (reading one could
    block forever); ``follow=False`` (run folders) refuses a link too."""
    path = Path(path)
    try:
        fd = nofollow.open_fd(path.resolve() if follow else path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})", path=str(path)) from None
    return loads_json(raw, str(path), max_bytes=max_bytes, what=what)


def finite_int(value: Any, where: str, field: str, *, lo: int = 0, hi: int = 2**53,
               line: int | None = None) -> int:
    """``value`` as an int in [lo, hi]: bools, floats (1e999 parses to inf) and strings are
    refused, so ``int()`` can never raise OverflowError or ValueError downstream."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise DataError(f"expected an integer in [{lo}, {hi}], got {str(value)[:40]}",
                        path=where, line=line, field=field)
    return value


# ----------------------------------------------------------------------------- YAML

def _yaml_loader():
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (merge keys ``<<`` excepted)."""

        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class names an unhashable key itself
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise DataError(f"duplicate key {key!r} (first on line {seen[key]})",
                                    path=self.name, line=line, field=str(key))
                seen[key] = line
            return super().construct_mapping(node, deep)

    return BoundedLoader


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_yaml_graph(root: Any, where: str, max_nodes: int, max_depth: int) -> None:
    """Expanded size and depth of a composed YAML node graph (aliases share nodes), without
    expanding it and without recursion; a node that reaches itself is refused."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    entered: set[int] = set()  # the path from the root to the node in work (DFS order)
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            entered.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in kids)
            depth[key] = 1 + max((depth[id(c)] for c in kids), default=0)
            line = node.start_mark.line + 1
            if size[key] > max_nodes:
                raise DataError(f"YAML expands to more than {max_nodes} nodes (aliases of "
                                "aliases: a 'billion laughs')", path=where, line=line)
            if depth[key] > max_depth:
                raise DataError(f"YAML nested more than {max_depth} levels deep", path=where,
                                line=line)
            continue
        if key in size:
            continue
        entered.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in entered:
                raise DataError("recursive YAML anchor (an alias inside its own anchor)",
                                path=where, line=child.start_mark.line + 1)
            if id(child) not in size:
                stack.append((child, False))


def loads_yaml(text: str, where: str, *, max_bytes: int = MAX_YAML_BYTES,
               max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``yaml.safe_load`` bounded in size, alias expansion and depth, refusing duplicate
    keys and recursive anchors (DataError naming ``where`` and the line)."""
    import yaml

    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise DataError(f"YAML larger than the limit of {max_bytes} bytes", path=where)
    loader = _yaml_loader()(text)
    loader.name = where
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_graph(node, where, max_nodes, max_depth)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise DataError(f"invalid YAML: {exc.problem or exc.context}", path=where,
                        line=line) from None
    except yaml.YAMLError as exc:
        raise DataError(f"invalid YAML: {exc}", path=where) from None
    except RecursionError:  # the composer recurses before the graph can be checked
        raise DataError(f"YAML nested too deeply (limit {max_depth})", path=where) from None
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------- JSONL(.gz)

def jsonl_lines(path: Path, *, max_line_bytes: int = MAX_LINE_BYTES,
                max_total_bytes: int = MAX_TOTAL_BYTES,
                opener: Any = None) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of a JSONL or JSONL.gz file, each line at most
    ``max_line_bytes`` and the (decompressed) total at most ``max_total_bytes``; a bad gzip
    stream names the line it broke in. ``opener(path)`` gives a binary file (default: open,
    or gzip.open for ``.gz``)."""
    path = Path(path)
    if opener is None:
        opener = (lambda p: gzip.open(p, "rb")) if path.suffix == ".gz" else \
            (lambda p: open(p, "rb"))
    line_no, total = 0, 0
    try:
        with opener(path) as f:
            while True:
                raw = f.readline(max_line_bytes + 1)
                if not raw:
                    return
                line_no += 1
                total += len(raw)
                if len(raw) > max_line_bytes:
                    raise DataError(f"line longer than {max_line_bytes} bytes (a gzip bomb or "
                                    "a file that is not JSONL)", path=str(path), line=line_no)
                if total > max_total_bytes:
                    raise DataError(f"more than {max_total_bytes} bytes (decompressed)",
                                    path=str(path), line=line_no)
                yield line_no, raw
    except gzip.BadGzipFile as exc:
        raise DataError(f"not a gzip file ({exc}); rename it without .gz if it is plain JSONL",
                        path=str(path)) from None
    except (EOFError, zlib.error) as exc:
        raise DataError(f"corrupt or truncated gzip data after line {line_no} ({exc})",
                        path=str(path), line=line_no + 1) from None


def read_gz_bounded(path: Path, max_bytes: int = MAX_JSON_BYTES, opener: Any = None) -> bytes:
    """The decompressed bytes of a .gz file, at most ``max_bytes`` (DataError beyond)."""
    path = Path(path)
    try:
        with (opener(path) if opener else gzip.open(path, "rb")) as f:
            data = f.read(max_bytes + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"corrupt gzip data ({exc})", path=str(path)) from None
    if len(data) > max_bytes:
        raise DataError(f"decompresses to more than {max_bytes} bytes", path=str(path))
    return data


# ----------------------------------------------------------------------------- safetensors

_ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
              "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def safetensors_header(path: Path, *, max_header: int = MAX_SAFETENSORS_HEADER,
                       ) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} of a safetensors file, after checking the header length,
    its JSON, each dtype, shape and byte range against the file size (DataError otherwise)."""
    path = Path(path)
    where = str(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        head = f.read(8)
        if len(head) < 8:
            raise DataError("not a safetensors file (shorter than its 8-byte header length)",
                            path=where)
        (n,) = struct.unpack("<Q", head)
        if n > max_header or 8 + n > size:
            raise DataError(f"safetensors header of {n} bytes (file {size} bytes, limit "
                            f"{max_header})", path=where)
        meta = loads_json(f.read(n), where, max_bytes=max_header, max_depth=4,
                          what="safetensors header")
    if not isinstance(meta, dict):
        raise DataError("safetensors header is not a JSON object", path=where)
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    data_size = size - 8 - n
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        ok = isinstance(info, dict) and info.get("dtype") in _ST_DTYPES and \
            isinstance(info.get("shape"), list) and isinstance(info.get("data_offsets"), list)
        shape = info.get("shape") if ok else None
        offs = info.get("data_offsets") if ok else None
        ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape) \
            and len(offs) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
        if not ok or not 0 <= offs[0] <= offs[1] <= data_size or \
                offs[1] - offs[0] != math.prod(shape) * _ST_DTYPES[info["dtype"]]:
            raise DataError("safetensors entry with a bad dtype, shape or byte range",
                            path=where, field=name)
        out[name] = (info["dtype"], tuple(shape))
    return out

"""Colours, scales and token display shared by every widget (Python twin of ``widgets/common.js``).

The static renderers (this package) and the live front ends (``widgets/*.js``) must paint the
same value with the same colour, so both sides implement the *same* arithmetic: fixed colour
stops, linear interpolation in RGB, rounding with floor(x + 0.5), and the "linear" quantile of
numpy for the p99 clip. ``tests/widgets/test_js.py`` checks the two agree value by value.

Palettes (all colour-blind safe):
- teachers: Okabe-Ito, one fixed hue per teacher index everywhere;
- divergences (>= 0): ColorBrewer YlGnBu, clipped at the 99th percentile;
- signed values: ColorBrewer RdBu (blue < 0 < red), centred at 0, symmetric.
"""

from __future__ import annotations

import html
import math
import unicodedata
from collections.abc import Sequence

# Okabe-Ito, reordered so the first teachers get the most distinct, highest-contrast hues.
TEACHER_COLORS = ("#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7",
                  "#F0E442", "#000000")
SEQUENTIAL = ("#ffffd9", "#edf8b1", "#c7e9b4", "#7fcdbb", "#41b6c4", "#1d91c0", "#225ea8",
              "#253494", "#081d58")
DIVERGING = ("#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7",
             "#f4a582", "#d6604d", "#b2182b", "#67001f")
MISSING_COLOR = "#bdbdbd"  # NaN / unknown values: neutral grey, never a scale colour

# Whitespace and control characters are shown as visible marks (drawn in a distinct style).
WS_MARKS = {" ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"}
EMPTY_TOKEN = "∅"


# Characters that change how *other* text is displayed (bidi overrides/isolates/marks, other
# format and control characters, line/paragraph separators) never reach the page raw: a
# right-to-left override in a model's answer would make it read reversed.
_KEEP = {"\n", "\t"}  # shown as layout in free text (pre-wrap); tokens mark them instead


def is_invisible(ch: str) -> bool:
    """True for control (Cc), format (Cf, incl. U+202A-202E, U+2066-2069, U+200E/F, U+061C)
    and line/paragraph separator (Zl, Zp) characters."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def escape_char(ch: str) -> str:
    """The visible escape of one character: ``\\x07``, ``\\u202e``, ``\\U000e0001``."""
    c = ord(ch)
    if c < 0x100:
        return f"\\x{c:02x}"
    return f"\\u{c:04x}" if c <= 0xFFFF else f"\\U{c:08x}"


def visible_text(s: str) -> str:
    """``s`` with every invisible/bidi character replaced by its visible escape (newline and tab
    kept). Same rules as common.js:visibleText."""
    if s.isprintable() or not any(is_invisible(ch) and ch not in _KEEP for ch in s):
        return s
    return "".join(escape_char(ch) if ch not in _KEEP and is_invisible(ch) else ch for ch in s)


def teacher_color(k: int) -> str:
    return TEACHER_COLORS[k % len(TEACHER_COLORS)]


def _hex_to_rgb(h: str) -> tuple[int, int, int]:
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _interp(stops: Sequence[str], x: float) -> str:
    """Colour at x in [0, 1] along ``stops`` (linear in RGB). Same steps as common.js:interp."""
    x = min(1.0, max(0.0, x))
    pos = x * (len(stops) - 1)
    i = min(int(math.floor(pos)), len(stops) - 2)
    f = pos - i
    a, b = _hex_to_rgb(stops[i]), _hex_to_rgb(stops[i + 1])
    rgb = [_round_half_up(a[c] + (b[c] - a[c]) * f) for c in range(3)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def seq_color(v: float | None, vmax: float) -> str:
    """Sequential colour for a non-negative value, saturating at ``vmax`` (the p99 clip)."""
    if not _finite(v):
        return MISSING_COLOR
    if vmax <= 0:
        return SEQUENTIAL[0]
    return _interp(SEQUENTIAL, v / vmax)


def div_color(v: float | None, vabs: float) -> str:
    """Diverging colour for a signed value: white at 0, blue below, red above, |v| clipped at vabs."""
    if not _finite(v):
        return MISSING_COLOR
    if vabs <= 0:
        return DIVERGING[len(DIVERGING) // 2]
    return _interp(DIVERGING, 0.5 + 0.5 * max(-1.0, min(1.0, v / vabs)))


def text_color(bg: str) -> str:
    """Black or white text, whichever reads better on ``bg`` (relative luminance threshold)."""
    r, g, b = _hex_to_rgb(bg)
    lum = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255.0
    return "#000000" if lum > 0.45 else "#ffffff"


def quantile(values: Sequence[float], q: float) -> float:
    """numpy's default ("linear") quantile over the finite values; 0.0 when there are none."""
    xs = sorted(float(v) for v in values if _finite(v))
    if not xs:
        return 0.0
    pos = (len(xs) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def clip_max(values: Sequence[float], q: float = 0.99) -> float:
    """The top of a sequential scale: the q-quantile (p99) so one outlier does not wash out the rest."""
    return quantile(values, q)


def clip_abs(values: Sequence[float], q: float = 0.99) -> float:
    """Half-width of a diverging scale: the q-quantile of |v|."""
    return quantile([abs(v) for v in values if _finite(v)], q)


# ---------------------------------------------------------------------------------- tokens
def token_segments(tok: str) -> list[tuple[str, bool]]:
    """Split a token into display runs ``(text, is_mark)``; marks replace whitespace/control chars.

    ``" a\\n"`` -> ``[("·", True), ("a", False), ("↵", True)]``. Same rules as common.js.
    """
    if tok == "":
        return [(EMPTY_TOKEN, True)]
    segs: list[tuple[str, bool]] = []
    for ch in tok:
        if ch in WS_MARKS:
            mark, is_mark = WS_MARKS[ch], True
        elif is_invisible(ch):
            mark, is_mark = escape_char(ch), True
        else:
            mark, is_mark = ch, False
        if segs and segs[-1][1] == is_mark:
            segs[-1] = (segs[-1][0] + mark, is_mark)
        else:
            segs.append((mark, is_mark))
    return segs


def token_html(tok: str) -> str:
    """Escaped HTML for one token with whitespace marks in a distinct (grey, italic) style."""
    parts = []
    for text, is_mark in token_segments(tok):
        t = html.escape(text, quote=True)
        parts.append(f'<span style="color:#8a8a8a;font-style:italic">{t}</span>' if is_mark else t)
    return "".join(parts)


def esc(x) -> str:
    """html.escape for any value, bidi/control characters as visible escapes (model text is
    untrusted: always go through here)."""
    return html.escape(visible_text(str(x)), quote=True)


def fmt(v: float | None, digits: int = 3) -> str:
    if not _finite(v):
        return "–"
    return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 else f"{v:.1e}"


def legend_html(title: str, vmax: float, *, signed: bool = False, suffix: str | None = None) -> str:
    """An inline-styled colour bar with end labels (static renders always carry a legend)."""
    stops = DIVERGING if signed else SEQUENTIAL
    grad = ",".join(stops)
    lo = f"−{fmt(vmax)}" if signed else "0"
    return (
        '<div style="display:flex;align-items:center;gap:6px;font:11px sans-serif;margin:4px 0">'
        f"<span>{esc(title)}</span><span>{lo}</span>"
        f'<span style="display:inline-block;width:140px;height:10px;'
        f'background:linear-gradient(to right,{grad});border:1px solid #ccc"></span>'
        f"<span>{esc(fmt(vmax))}{suffix if suffix is not None else ' (p99 clip)' if not signed else ''}"
        "</span></div>"
    )


def teacher_legend_html(names: Sequence[str]) -> str:
    items = "".join(
        f'<span style="display:inline-flex;align-items:center;gap:3px;margin-right:10px">'
        f'<span style="display:inline-block;width:10px;height:10px;background:{teacher_color(k)}">'
        f"</span>{esc(n)}</span>"
        for k, n in enumerate(names)
    )
    return f'<div style="font:11px sans-serif;margin:4px 0">{items}</div>'


# JupyterLab theme variables with light fallbacks: readable in the dark theme and outside Lab.
FG = "var(--jp-ui-font-color1, #222)"
FG_MUTED = "var(--jp-ui-font-color2, #555)"
BORDER = "var(--jp-border-color2, #ddd)"


def banner_html(text: str | None) -> str:
    """A warning strip (e.g. "most confidences are missing, weights are uniform"); '' for None."""
    if not text:
        return ""
    return ('<div class="madopd-banner" role="alert" style="border-left:4px solid #D55E00;'
            'background:var(--jp-warn-color3, #fdebd0);color:var(--jp-ui-font-color0, #111);'
            f'padding:4px 8px;margin:4px 0;font:12px sans-serif">⚠ {esc(text)}</div>')

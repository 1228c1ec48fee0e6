"""Model text is untrusted: every static render shows hostile text as inert, escaped text."""

import dataclasses
from html.parser import HTMLParser

import pytest

from madopd.widgets.board import debate_payload, render_debate_html
from madopd.widgets.dashboard import add_probe, dashboard_payload, render_dashboard_html
from madopd.widgets.decomposition import decomposition_payload, render_decomposition_html
from madopd.widgets.examples import HOSTILE, example_record
from madopd.widgets.failures import failures_payload, render_failures_html
from madopd.widgets.lens import lens_payload, render_lens_html
from madopd.widgets.playground import playground_payload, render_playground_html

SAFE_TAGS = {"div", "span", "b", "table", "tr", "th", "td", "thead", "tbody", "svg",
             "rect", "text", "sub", "br", "polyline", "line", "path", "g", "title"}


class _Audit(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.bad_attrs, self.stack, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.bad_attrs += [(tag, a) for a, _ in attrs if a.startswith("on") or a in ("src", "href")]
        if tag not in ("br", "rect", "polyline", "line", "path"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in ("rect", "polyline", "line", "path"):
            return
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> (open: {self.stack[-3:]})"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def audit(html: str) -> _Audit:
    a = _Audit()
    a.feed(html)
    a.close()
    assert not a.stack, f"unclosed tags: {a.stack}"
    assert set(a.tags) <= SAFE_TAGS, set(a.tags) - SAFE_TAGS
    assert not a.bad_attrs
    return a


def _hostile_record(step=0):
    """Example record whose every free-text field (ids, families, names, tokens) is hostile."""
    rec = example_record(step)
    B = len(rec.responses)
    names = [HOSTILE[k % len(HOSTILE)] for k in range(len(rec.teacher_names))]
    for tr in rec.transcripts:
        tr.teacher_names = list(names)
        tr.state_id = HOSTILE[1]
    return dataclasses.replace(
        rec, teacher_names=names, state_ids=[HOSTILE[1]] * B, families=[HOSTILE[2]] * B,
        response_tokens=[[HOSTILE[t % 4][:7] for t in range(len(r))] for r in rec.response_tokens])


def _renders():
    rec = _hostile_record()
    b = 3  # the sample whose prompt, response and debate carry the hostile strings
    yield "lens", render_lens_html(lens_payload(rec, b, decode=lambda i: HOSTILE[i % 4]))
    yield "board", render_debate_html(debate_payload(rec.transcripts[b], record=rec, sample=b))
    yield "decomposition", render_decomposition_html(decomposition_payload(rec, b))
    yield "failures", render_failures_html(failures_payload([rec, _hostile_record(1)]))
    dash = dashboard_payload(records=[rec])
    add_probe(dash, 0, [h[:5] for h in HOSTILE], [0.1, 0.2, 0.3, 0.4])
    yield "dashboard", render_dashboard_html(dash)
    yield "playground", render_playground_html(
        playground_payload([0.3, 0.3, 0.4], labels=HOSTILE[:3], with_reference=False))


@pytest.mark.parametrize("name,html", list(_renders()), ids=lambda x: x if len(x) < 20 else "")
def test_hostile_text_is_inert_in_static_html(name, html):
    a = audit(html)
    text = "".join(a.text)
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "<i>" not in html and "<i " not in html  # hostile "<i>tags" never becomes an element
    assert HOSTILE[1] in text or HOSTILE[0] in text or HOSTILE[1][:5] in text  # shown as text
    if name in ("lens", "board"):
        assert HOSTILE[0] in text  # the prompt / debate message, verbatim


# Bidi overrides/isolates/marks and other control/format characters: a right-to-left override in
# a model's answer would make the rest of the line read reversed. Every render shows them as
# visible escapes (``\u202e``), never raw.
BIDI = "pay \u202eevil\u202c \u2066iso\u2069 \u200e\u200f\u061c zw\u200b\u200d bom\ufeff nul\x00 c1\x85 sep\u2028"
RAW_BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
            "\u200e", "\u200f", "\u061c", "\u200b", "\u200d", "\ufeff", "\x00", "\x85", "\u2028"]


def _bidi_record(step=0):
    rec = _hostile_record(step)
    for tr in rec.transcripts:
        for m in tr.messages:
            m.text, m.answer = BIDI + m.text, BIDI + m.answer
    B = len(rec.responses)
    return dataclasses.replace(
        rec, prompts=[BIDI + p for p in rec.prompts], responses=[BIDI + r for r in rec.responses],
        teacher_names=[BIDI[:8] + n for n in rec.teacher_names], state_ids=[BIDI] * B,
        response_tokens=[[BIDI[4:10]] + list(r[1:]) for r in rec.response_tokens])


def _bidi_renders():
    rec = _bidi_record()
    yield "lens", render_lens_html(lens_payload(rec, 3, decode=lambda i: BIDI[i % len(BIDI)]))
    yield "board", render_debate_html(debate_payload(rec.transcripts[3], record=rec, sample=3))
    yield "decomposition", render_decomposition_html(decomposition_payload(rec, 3))
    yield "failures", render_failures_html(failures_payload([rec, _bidi_record(1)]))
    dash = dashboard_payload(records=[rec])
    add_probe(dash, 0, [BIDI[4:9], "a\u202e", "\u2067b", "c"], [0.1, 0.2, 0.3, 0.4])
    yield "dashboard", render_dashboard_html(dash)
    yield "playground", render_playground_html(
        playground_payload([0.3, 0.3, 0.4], labels=["\u202ex", "y\u2066", "z"], with_reference=False))


@pytest.mark.parametrize("name,html", list(_bidi_renders()), ids=lambda x: x if len(x) < 20 else "")
def test_bidi_and_control_characters_are_visible_escapes(name, html):
    audit(html)
    raw = [hex(ord(c)) for c in RAW_BIDI if c in html]
    assert not raw, f"{name}: raw invisible characters reach the HTML: {raw}"
    assert "\\u202e" in html, f"{name}: the override is not shown as an escape"


def test_visible_text_rules():
    from madopd.widgets.style import token_segments, visible_text

    assert visible_text("a\u202eb") == "a\\u202eb"
    assert visible_text("x\n\ty") == "x\n\ty"  # layout characters stay in free text
    assert visible_text("\x07\x85\u2069\U000e0001") == "\\x07\\x85\\u2069\\U000e0001"
    assert visible_text("plain ü 中文 ٱلعربية") == "plain ü 中文 ٱلعربية"  # RTL letters are not controls
    assert token_segments("a\u202e\n") == [("a", False), ("\\u202e↵", True)]


def test_visible_text_python_equals_js():
    from jsrun import node_json

    from madopd.widgets.style import token_segments, visible_text

    samples = [BIDI, "\u202dLTR\u202c", "tab\tnl\n\r", "ok ü 中文", "\U000e0041tag", "", " "]
    js = node_json('const C = await import(STATIC + "/common.js");\n'
                   "print(DATA.map((s) => [C.visibleText(s), C.tokenSegments(s)]));", samples)
    assert js == [[visible_text(s), [list(x) for x in token_segments(s)]] for s in samples]


def test_report_shows_bidi_as_escapes():
    from madopd.toyworld.report import esc, plain

    assert "\u202e" not in esc("\u202eevil") and "\\u202e" in esc("\u202eevil")
    assert plain({"toy-tools": "jsd", "toy-code": "rkl"}) == "toy-tools: jsd, toy-code: rkl"
    assert plain((0, 1)) == "0, 1"

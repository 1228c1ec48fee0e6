"""Static PNG renders: a PNG reader written here checks the bytes, pixels equal the HTML scales."""

import struct
import zlib

import pytest

from madopd.errors import ValueRangeError
from madopd.widgets import png
from madopd.widgets.board import debate_payload, render_debate_png
from madopd.widgets.dashboard import add_probe, dashboard_payload, render_dashboard_png
from madopd.widgets.decomposition import decomposition_payload, render_decomposition_png
from madopd.widgets.examples import EXAMPLE_TEACHERS, example_record, example_run
from madopd.widgets.failures import NUMERIC, failures_payload, render_failures_png
from madopd.widgets.lens import LENS_KINDS, lens_payload, render_lens_png
from madopd.widgets.playground import (
    KIND_COLORS,
    PNG_BAR_H,
    PNG_BAR_W,
    playground_payload,
    render_playground_png,
    simulate,
)
from madopd.widgets.style import (
    SEQUENTIAL,
    clip_abs,
    clip_max,
    div_color,
    seq_color,
    teacher_color,
)

X0 = png.MARGIN + png.BAR_W + png.BAR_GAP  # first heat cell column
PITCH = png.CELL_W + png.GAP


def decode(data: bytes):
    """Independent reader: signature, chunk CRCs, IHDR (8-bit RGB), filter-0 rows -> pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + n
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, ctype, comp, filt, inter) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    assert len(raw) == h * (1 + 3 * w)
    px = []
    for y in range(h):
        row = raw[y * (1 + 3 * w):(y + 1) * (1 + 3 * w)]
        assert row[0] == 0  # filter type None
        px.append([tuple(row[1 + 3 * x:4 + 3 * x]) for x in range(w)])
    return w, h, px


def hx(color: str):
    return png.rgb(color)


def test_encoder_roundtrip_and_canvas_clipping():
    cv = png.Canvas(5, 3, "#102030")
    cv.fill_rect(-2, 1, 4, 10, "#ff0000")  # clipped to x in [0, 2), y in [1, 3)
    cv.line(0, 0, 4, 2, "#00ff00")
    w, h, px = decode(cv.to_png())
    assert (w, h) == (5, 3)
    assert px[0][4] == (0x10, 0x20, 0x30) and px[2][0] == (255, 0, 0)
    assert px[0][0] == px[2][4] == (0, 255, 0)  # both Bresenham end points drawn
    assert all(px[y][x] == cv.pixel(x, y) for y in range(h) for x in range(w))
    with pytest.raises(ValueRangeError):
        png.Canvas(0, 4)
    with pytest.raises(ValueRangeError):
        png.rgb("red")
    with pytest.raises(ValueRangeError):
        png.encode_png(2, 2, b"\x00" * 11)


@pytest.fixture(scope="module")
def rec():
    return example_record()


def test_lens_cells_use_html_scale(rec):
    p = lens_payload(rec, 0)
    w, h, px = decode(render_lens_png(p))
    vals, K, T = p["values"], len(EXAMPLE_TEACHERS), len(p["tokens"])
    n_strips = len(LENS_KINDS) + 1  # + recorded
    block = png.rows_height(n_strips) + png.MARGIN
    for k in range(K):
        y_k = png.MARGIN + k * block
        assert px[y_k][png.MARGIN] == hx(teacher_color(k))  # teacher legend bar
        for i, kind in enumerate(LENS_KINDS):
            flat = [v for row in vals[kind] for v in row]
            vmax = clip_max(flat)
            for t in (0, T - 1, max(range(T), key=lambda t: vals[kind][k][t])):
                x, y = X0 + t * PITCH + 2, y_k + png.rows_height(i) + 3
                assert px[y][x] == hx(seq_color(vals[kind][k][t], vmax)), (k, kind, t)
        rec_v = [row[k] for row in p["recorded"]]
        y = y_k + png.rows_height(len(LENS_KINDS)) + 3
        vmax = clip_max([v for row in p["recorded"] for v in row])
        assert [px[y][X0 + t * PITCH] for t in range(T)] == \
            [hx(seq_color(v, vmax)) for v in rec_v]
    assert w >= X0 + T * PITCH


def test_lens_zero_and_clipped_max():
    """A zero divergence paints the scale's zero colour; one above the p99 clip the top colour."""
    p = lens_payload(example_record(), 0)
    T = len(p["tokens"])
    vals = {kind: [[0.0] * T for _ in EXAMPLE_TEACHERS] for kind in LENS_KINDS}
    vals["fkl"][0][1] = 1e6  # an outlier far above the p99 clip
    vals["fkl"][1][2] = 1.0
    p = dict(p, values=vals, recorded=None)
    _, _, px = decode(render_lens_png(p))
    y = png.MARGIN + 3
    assert px[y][X0 + 2] == hx(SEQUENTIAL[0])
    assert px[y][X0 + PITCH + 2] == hx(SEQUENTIAL[-1])


def test_size_grows_with_tokens(rec):
    p = lens_payload(rec, 3)  # the long (hostile) response: wider than the legends
    w1, h1, _ = decode(render_lens_png(p))
    short = dict(p, tokens=p["tokens"][:3])
    w0, h0, _ = decode(render_lens_png(short))
    assert w0 < w1 and h0 == h1
    d = decomposition_payload(rec, 3)
    wd, _, _ = decode(render_decomposition_png(d))
    wd0, _, _ = decode(render_decomposition_png(dict(d, tokens=d["tokens"][:3])))
    assert wd0 < wd


def test_decomposition_rows_legend_and_bars(rec):
    p = decomposition_payload(rec, 1)
    _, _, px = decode(render_decomposition_png(p))
    K, T = len(EXAMPLE_TEACHERS), len(p["tokens"])
    cmax = clip_max([v for row in p["contrib"] for v in row])
    for k in range(K):
        y = png.MARGIN + png.rows_height(k) + 3
        assert px[y][png.MARGIN + 1] == hx(teacher_color(k))
        assert [px[y][X0 + t * PITCH + 1] for t in range(T)] == \
            [hx(seq_color(row[k], cmax)) for row in p["contrib"]]
    y = png.MARGIN + png.rows_height(K) + png.MARGIN + 3
    vabs = clip_abs(p["diff"])
    assert [px[y][X0 + t * PITCH] for t in range(T)] == [hx(div_color(d, vabs)) for d in p["diff"]]
    # stacked bars: the bottom segment of every non-empty column is teacher 0's colour
    base = png.MARGIN + png.rows_height(K) + png.MARGIN + png.rows_height(1) + png.MARGIN + 40
    top = max([sum(r) for r in p["contrib"]] + p["equal"])
    t = max(range(T), key=lambda t: p["contrib"][t][0])
    assert round(40 * p["contrib"][t][0] / top) >= 1
    assert px[base - 1][X0 + t * PITCH + 1] == hx(teacher_color(0))


def test_debate_heat_rows_weights_rounds(rec):
    p = debate_payload(rec.transcripts[0], record=rec, sample=0)
    _, _, px = decode(render_debate_png(p))
    K, div = len(EXAMPLE_TEACHERS), p["student"]["div"]
    vmax = clip_max([v for row in div for v in row])
    y_w = png.MARGIN + png.rows_height(K) + png.MARGIN
    for k in range(K):
        y = png.MARGIN + png.rows_height(k) + 2
        assert px[y][png.MARGIN] == px[y_w + png.rows_height(k)][png.MARGIN] == \
            hx(teacher_color(k))
        assert [px[y][X0 + t * PITCH] for t in range(len(div))] == \
            [hx(seq_color(row[k], vmax)) for row in div]
        bar = [px[y_w + png.rows_height(k) + 2][X0 + i] for i in range(90)]
        assert bar.count(hx(teacher_color(k))) == round(80 * p["weights"][k])
    # without a student and with no teachers the board still renders a valid image
    empty = dict(p, student=None)
    assert decode(render_debate_png(empty))[1] < decode(render_debate_png(p))[1]
    assert decode(render_debate_png({}))[0] >= 1


def test_playground_bars_match_simulation():
    p = playground_payload((0.1, 0.6, 0.3), with_reference=False)
    p["static_steps"] = 20
    w, h, px = decode(render_playground_png(p))
    n = 3
    base = png.MARGIN + 4 + PNG_BAR_H
    for j, kind in enumerate(p["kinds"]):
        x0 = png.MARGIN + j * (n * PNG_BAR_W + png.MARGIN)
        assert px[png.MARGIN][x0] == hx(KIND_COLORS[kind])
        q = simulate(p, kind, 20)["q"]
        top = max(max(p["teacher_probs"]), max(q))
        for i in range(n):
            x = x0 + i * PNG_BAR_W + 3  # inside the bar, off the outline's vertical sides
            hq, hp = round(PNG_BAR_H * q[i] / top), round(PNG_BAR_H * p["teacher_probs"][i] / top)
            outline_rows = {base - hp, base - 1}  # the teacher outline is drawn over the fill
            for y in range(base - PNG_BAR_H, base):
                want = ("#333333" if y in outline_rows else
                        KIND_COLORS[kind] if y >= base - hq else "#ffffff")
                assert px[y][x] == hx(want), (kind, i, y)
    assert w == png.MARGIN + 3 * (n * PNG_BAR_W + png.MARGIN) + png.MARGIN


def test_dashboard_polyline_and_ribbon():
    d = dashboard_payload(records=example_run(5))
    add_probe(d, 0, list("abc"), [0.0, 0.5, 2.0])
    add_probe(d, 5, list("abc"), [0.0, 0.1, 0.2])
    w, h, px = decode(render_dashboard_png(d))
    black = (0x00, 0x72, 0xB2)  # the loss colour (dashboard.LOSS_COLOR; readable on dark too)
    chart = [[px[y][x] for x in range(png.MARGIN, png.MARGIN + 280)]
             for y in range(png.MARGIN, png.MARGIN + 110)]
    xs = [x for row in chart for x, c in enumerate(row) if c == black]
    assert min(xs) == 4 and max(xs) == 280 - 4  # the loss polyline spans the chart
    # first point: y scaled like the SVG (y from min(0, loss) to max loss)
    lo, hi = min(0.0, min(d["loss"])), max(d["loss"])
    y_first = round(110 - 14 - 84 * (d["loss"][0] - lo) / (hi - lo))
    assert chart[y_first][4] == black
    assert chart[110 // 4][100] == (0xEE, 0xEE, 0xEE)  # grid line
    y_rib = png.MARGIN + 2 * (110 + png.MARGIN)
    vmax = clip_max([0.0, 0.5, 2.0, 0.0, 0.1, 0.2])
    assert [px[y_rib + 2][png.MARGIN + t * PITCH] for t in range(3)] == \
        [hx(seq_color(v, vmax)) for v in (0.0, 0.5, 2.0)]
    assert px[y_rib + 2][png.MARGIN] == hx(SEQUENTIAL[0])
    we, he, _ = decode(render_dashboard_png(dashboard_payload()))  # no data: grid only
    assert we == w and he < h


def test_failures_and_empty_inputs(rec):
    f = failures_payload([rec])
    _, h, px = decode(render_failures_png(f))
    top = max(f["rows"], key=lambda r: r["loss"])
    assert px[png.MARGIN + 2][png.MARGIN] == hx(seq_color(top["loss"], clip_max(
        [r["loss"] for r in f["rows"]])))
    assert decode(render_failures_png(failures_payload([])))[:2] == \
        (2 * png.MARGIN + len(NUMERIC) * PITCH, 2 * png.MARGIN + 1)
    lens = dict(lens_payload(rec, 0), tokens=[], values={k: [[] for _ in EXAMPLE_TEACHERS]
                                                         for k in LENS_KINDS}, recorded=[])
    assert decode(render_lens_png(lens))[0] >= 1
    dec = dict(decomposition_payload(rec, 0), tokens=[], contrib=[], diff=[], equal=[], total=[])
    assert decode(render_decomposition_png(dec))[0] >= 1


def test_widget_classes_to_png_and_save_png(rec, tmp_path):
    pytest.importorskip("anywidget")
    from madopd.widgets.classes import DebateBoard, DivergenceLens, LiveDashboard

    lens = DivergenceLens(rec, 0)
    assert lens.to_png() == render_lens_png(lens.payload)
    lens.save_png(tmp_path / "lens.png")
    assert (tmp_path / "lens.png").read_bytes() == lens.to_png()
    lens.beta = 0.2  # the PNG follows the slider like the HTML does
    assert lens.to_png() != render_lens_png(lens.payload)
    assert decode(DebateBoard().to_png())[0] >= 1
    assert decode(LiveDashboard().to_png())[0] >= 1

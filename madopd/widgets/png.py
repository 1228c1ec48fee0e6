"""A tiny pure-Python PNG writer and RGB canvas for the widgets' static PNG renders.

No Pillow / matplotlib: a PNG is a signature plus chunks (length, type, data, CRC-32 of type +
data); we write IHDR (8-bit RGB, no interlace), one zlib-compressed IDAT whose rows each start
with filter byte 0 ("None"), and IEND. The pictures carry colours only (no model text), painted
with the very colour strings of ``madopd.widgets.style`` so a value has the same colour in the
HTML and in the PNG.

Shared layout (the renderers in each widget module use it; tests read pixels at these places):
  MARGIN around everything; heat rows start at (MARGIN + BAR_W + BAR_GAP, MARGIN); each cell is
  CELL_W × CELL_H with a GAP between cells and rows; a BAR_W-wide bar in the teacher's fixed
  colour at the left of each teacher's rows is the legend.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence

from madopd.errors import ValueRangeError

MARGIN, CELL_W, CELL_H, GAP, BAR_W, BAR_GAP = 4, 6, 10, 1, 6, 3
LEGEND_W, LEGEND_H = 120, 6
MAX_SIDE = 16384  # refuse absurd canvases instead of allocating gigabytes
WHITE = "#ffffff"
SIGNATURE = b"\x89PNG\r\n\x1a\n"

Color = str | tuple[int, int, int]


def rgb(color: Color) -> tuple[int, int, int]:
    """``"#rrggbb"`` (the style module's colours) or an (r, g, b) tuple -> (r, g, b)."""
    if isinstance(color, tuple):
        return color
    if not (isinstance(color, str) and len(color) == 7 and color[0] == "#"):
        raise ValueRangeError(f"color: expected '#rrggbb' or an (r, g, b) tuple, got {color!r}")
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, pixels: bytes) -> bytes:
    """PNG bytes for ``pixels`` = height rows of width RGB triples (row-major, 8 bits each)."""
    if len(pixels) != width * height * 3:
        raise ValueRangeError(f"pixels: expected {width * height * 3} bytes for {width}x{height} "
                              f"RGB, got {len(pixels)}")
    stride = width * 3
    raw = b"".join(b"\x00" + pixels[y * stride:(y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 = RGB
    return (SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 6))
            + _chunk(b"IEND", b""))


class Canvas:
    """An RGB raster; every drawing call clips to the canvas (drawing outside is a no-op)."""

    def __init__(self, width: int, height: int, background: Color = WHITE):
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise ValueRangeError(f"canvas size must be in [1, {MAX_SIDE}]², got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.buf = bytearray(bytes(rgb(background)) * (self.width * self.height))

    def fill_rect(self, x: int, y: int, w: int, h: int, color: Color) -> None:
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(self.width, int(x) + int(w)), min(self.height, int(y) + int(h))
        if x1 <= x0 or y1 <= y0:
            return
        run = bytes(rgb(color)) * (x1 - x0)
        for yy in range(y0, y1):
            i = (yy * self.width + x0) * 3
            self.buf[i:i + len(run)] = run

    def hline(self, x0: int, x1: int, y: int, color: Color) -> None:
        self.fill_rect(min(x0, x1), y, abs(x1 - x0) + 1, 1, color)

    def vline(self, x: int, y0: int, y1: int, color: Color) -> None:
        self.fill_rect(x, min(y0, y1), 1, abs(y1 - y0) + 1, color)

    def outline(self, x: int, y: int, w: int, h: int, color: Color) -> None:
        if w <= 0 or h <= 0:
            return
        self.hline(x, x + w - 1, y, color)
        self.hline(x, x + w - 1, y + h - 1, color)
        self.vline(x, y, y + h - 1, color)
        self.vline(x + w - 1, y, y + h - 1, color)

    def set(self, x: int, y: int, color: Color) -> None:
        self.fill_rect(x, y, 1, 1, color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Bresenham line, both end points included."""
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x1 >= x0 else -1), (1 if y1 >= y0 else -1)
        err = dx + dy
        while True:
            self.set(x0, y0, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = (y * self.width + x) * 3
        return self.buf[i], self.buf[i + 1], self.buf[i + 2]

    def to_png(self) -> bytes:
        return encode_png(self.width, self.height, bytes(self.buf))


# --------------------------------------------------------------------- shared drawing helpers
def rows_height(n_rows: int) -> int:
    return n_rows * (CELL_H + GAP)


def heat_row(cv: Canvas, x: int, y: int, colors: Sequence[str]) -> None:
    """One cell per value, left to right (a strip of tokens)."""
    for t, c in enumerate(colors):
        cv.fill_rect(x + t * (CELL_W + GAP), y, CELL_W, CELL_H, c)


def gradient_bar(cv: Canvas, x: int, y: int, color_at: Callable[[float], str],
                 w: int = LEGEND_W, h: int = LEGEND_H) -> None:
    """A colour-scale legend: column i shows ``color_at(i / (w - 1))`` (a fraction of the scale)."""
    for i in range(w):
        cv.fill_rect(x + i, y, 1, h, color_at(i / max(1, w - 1)))
    cv.outline(x - 1, y - 1, w + 2, h + 2, "#cccccc")


def save_png(data: bytes, path) -> None:
    from pathlib import Path

    Path(path).write_bytes(data)

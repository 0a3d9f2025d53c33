"""The token-length histogram as a PNG drawn with Pillow: no plotting library, no network, no fonts."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 320
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 28, 44
BAR = (79, 70, 229)
CUT = (220, 38, 38)
INK = (31, 41, 55)
GRID = (229, 231, 235)


def length_histogram_png(stats: dict) -> bytes:
    """Bars of example counts per token-length bin, with the max_length cut-off drawn in red."""
    hist = stats.get("histogram") or {"counts": [], "bins": [0, 1]}
    counts, edges = hist["counts"], hist["bins"]
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    peak = max(counts, default=0) or 1
    for k in range(5):
        y = bottom - (bottom - top) * k / 4
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((4, y - 6), str(round(peak * k / 4)), fill=INK, font=font)
    span = (edges[-1] - edges[0]) or 1
    plot_w = right - left

    def x_of(value: float) -> float:
        return left + plot_w * (value - edges[0]) / span

    for i, count in enumerate(counts):
        if count:
            x0, x1 = x_of(edges[i]) + 1, x_of(edges[i + 1]) - 1
            y0 = bottom - (bottom - top) * count / peak
            draw.rectangle([(x0, y0), (max(x0, x1), bottom)], fill=BAR)
    draw.line([(left, bottom), (right, bottom)], fill=INK)
    for i in range(0, len(edges), max(1, len(edges) // 5)):
        x = x_of(edges[i])
        draw.line([(x, bottom), (x, bottom + 4)], fill=INK)
        draw.text((x - 8, bottom + 6), str(edges[i]), fill=INK, font=font)
    max_length = stats.get("max_length")
    if max_length is not None and edges[0] <= max_length <= edges[-1]:
        x = x_of(max_length)
        draw.line([(x, top), (x, bottom)], fill=CUT, width=2)
        draw.text((min(x + 4, right - 90), top), f"max_length {max_length}", fill=CUT, font=font)
    draw.text((left, 6), f"examples per token length ({sum(counts)} rows)", fill=INK, font=font)
    draw.text((right - 80, HEIGHT - 16), "tokens", fill=INK, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()

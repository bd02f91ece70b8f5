#!/usr/bin/env python3
"""Render the metrics.jsonl of a smallthinker.cpp training run to one self-contained SVG
(loss, learning rate, ReGLU sparsity per layer, expert-load heatmap), standard library only."""

import argparse
import json
import math
import os
import sys
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 1200, 900
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
CHAR_W = 0.6  # approximate glyph width as a fraction of the font size
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
# Ramp used for the per-layer lines when there are more layers than PALETTE colours.
RAMP = ["#440154", "#3b528b", "#21918c", "#5ec962", "#c8a800"]
# Diverging blue-white-red scale: position in [-1, 1] -> colour.
DIVERGING = [(-1.0, "#2166ac"), (-0.5, "#67a9cf"), (0.0, "#ffffff"),
             (0.5, "#ef8a62"), (1.0, "#b2182b")]


class MetricsError(Exception):
    pass


def warn(msg):
    print("warning: " + msg, file=sys.stderr)


# ----------------------------------------------------------------------------- data


def num(x):
    """Return x as a finite float, or None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def step_of(rec):
    s = rec.get("step")
    if isinstance(s, bool):
        return None
    if isinstance(s, int):
        return s
    if isinstance(s, float) and math.isfinite(s) and s == int(s):
        return int(s)
    return None


def load_metrics(path):
    """Parse metrics.jsonl; keep the last record for each (type, step)."""
    if not os.path.isfile(path):
        raise MetricsError("%s not found" % path)
    latest = {"train": {}, "router": {}, "eval": {}}
    nonblank = 0
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            nonblank += 1
            try:
                rec = json.loads(line)
            except ValueError:
                warn("%s:%d: skipping line that is not valid JSON" % (path, lineno))
                continue
            if not isinstance(rec, dict):
                warn("%s:%d: skipping line that is not a JSON object" % (path, lineno))
                continue
            kind = rec.get("type")
            if kind not in latest:
                continue
            step = step_of(rec)
            if step is None:
                warn("%s:%d: skipping %s record without an integer step" % (path, lineno, kind))
                continue
            latest[kind][step] = rec  # later lines (a resumed run) win
    if nonblank == 0:
        raise MetricsError("%s is empty" % path)
    if not latest["train"]:
        raise MetricsError("%s has no train records" % path)
    return {k: [v[s] for s in sorted(v)] for k, v in latest.items()}


def series(records, key):
    pts = []
    for r in records:
        v = num(r.get(key))
        if v is not None:
            pts.append((float(step_of(r)), v))
    return pts


def per_layer_series(records, key):
    """{layer: [(step, value)]} from records whose `key` is a per-layer list."""
    out = {}
    for r in records:
        vals = r.get(key)
        if not isinstance(vals, list):
            continue
        for i, v in enumerate(vals):
            v = num(v)
            if v is not None:
                out.setdefault(i, []).append((float(step_of(r)), v))
    return out


# ----------------------------------------------------------------------------- scales


def nice_ticks(lo, hi, target=5):
    """Ticks at 1/2/5 x 10^k covering [lo, hi]; returns (lo', hi', step, ticks)."""
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-300):
        pad = abs(lo) * 0.1 if lo != 0 else 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / target
    mag = 10.0 ** math.floor(math.log10(raw))
    step = 10 * mag
    for m in (1, 2, 5, 10):
        if m * mag >= raw * (1 - 1e-9):
            step = m * mag
            break
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    ticks = [i * step for i in range(first, last + 1)]
    return first * step, last * step, step, ticks


def padded_ticks(lo, hi, floor_zero=False, frac=0.05, target=6):
    """Axis limits a little beyond the data (so lines do not run on the frame), with nice ticks
    inside; with floor_zero the lower limit stays at 0 when the data start there."""
    if hi < lo:
        lo, hi = hi, lo
    span = hi - lo
    if span <= 1e-12 * max(abs(lo), abs(hi), 1e-300):
        span = abs(lo) * 0.2 if lo != 0 else 2.0
        lo, hi = lo - span / 2, hi + span / 2
        if floor_zero and lo < 0 <= hi - span / 2:
            lo = 0.0
    a = lo if (floor_zero and lo == 0) else lo - frac * span
    b = hi + frac * span
    _, _, step, ticks = nice_ticks(a, b, target)
    eps = step * 1e-9
    return a, b, step, [t for t in ticks if a - eps <= t <= b + eps]


def fmt_tick(v, step, kilo=False):
    if abs(v) < step * 1e-6:
        return "0"
    if kilo and step >= 1000:
        return fmt_tick(v / 1000.0, step / 1000.0) + "k"
    k = math.floor(math.log10(step) + 1e-9)
    if -4 <= k and abs(v) < 1e6:
        return "%.*f" % (max(0, -k), v)
    e = math.floor(math.log10(abs(v)) + 1e-9)
    s = "%.*e" % (max(0, e - k), v)
    mant, _, exp = s.partition("e")
    return "%se%d" % (mant, int(exp))


def fmt_pct(frac):
    return "%.3g%%" % (frac * 100.0)


def hex_rgb(h):
    return tuple(int(h[i:i + 2], 16) for i in (1, 3, 5))


def lerp_colour(stops, t):
    """stops: [(pos, '#rrggbb')] sorted by pos; t is clamped to their range."""
    t = min(max(t, stops[0][0]), stops[-1][0])
    for (p0, c0), (p1, c1) in zip(stops, stops[1:]):
        if t <= p1:
            a = 0.0 if p1 == p0 else (t - p0) / (p1 - p0)
            r0, r1 = hex_rgb(c0), hex_rgb(c1)
            return "#%02x%02x%02x" % tuple(round(x + (y - x) * a) for x, y in zip(r0, r1))
    return stops[-1][1]


def layer_colours(n):
    if n <= len(PALETTE):
        return PALETTE[:n]
    stops = [(i / (len(RAMP) - 1), c) for i, c in enumerate(RAMP)]
    return [lerp_colour(stops, i / (n - 1)) for i in range(n)]


# ----------------------------------------------------------------------------- svg


class Svg:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.parts = []
        self.defs = []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=13, anchor="start", weight="normal", fill="#222",
             rotate=None, vcenter=False):
        attrs = ['x="%.1f"' % x, 'y="%.1f"' % y, 'font-size="%g"' % size]
        if anchor != "start":
            attrs.append('text-anchor="%s"' % anchor)
        if weight != "normal":
            attrs.append('font-weight="%s"' % weight)
        if fill != "#222":
            attrs.append('fill="%s"' % fill)
        if vcenter:
            attrs.append('dy="0.35em"')
        if rotate is not None:
            attrs.append('transform="rotate(%g %.1f %.1f)"' % (rotate, x, y))
        self.add("<text %s>%s</text>" % (" ".join(attrs), escape(str(s))))

    def line(self, x1, y1, x2, y2, stroke="#000", width=1.0, extra=""):
        self.add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"%s/>'
                 % (x1, y1, x2, y2, stroke, width, extra))

    def rect(self, x, y, w, h, fill="none", stroke="none", width=1.0, extra=""):
        self.add('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" stroke="%s" '
                 'stroke-width="%g"%s/>' % (x, y, w, h, fill, stroke, width, extra))

    def polyline(self, pts, stroke, width=1.6, dash=None):
        d = ' stroke-dasharray="%s"' % dash if dash else ""
        self.add('<polyline fill="none" stroke="%s" stroke-width="%g" stroke-linejoin="round"%s '
                 'points="%s"/>' % (stroke, width, d, " ".join("%.1f,%.1f" % p for p in pts)))

    def circle(self, x, y, r, fill, stroke="#fff"):
        self.add('<circle cx="%.1f" cy="%.1f" r="%g" fill="%s" stroke="%s" stroke-width="1"/>'
                 % (x, y, r, fill, stroke))

    def render(self):
        head = ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
                'viewBox="0 0 %d %d" font-family="%s">' % (self.w, self.h, self.w, self.h, FONT))
        body = ['<rect width="100%" height="100%" fill="#ffffff"/>']
        if self.defs:
            body.insert(0, "<defs>%s</defs>" % "".join(self.defs))
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + "\n".join(
            [head] + body + self.parts + ["</svg>"]) + "\n"


def text_width(s, size):
    return len(s) * size * CHAR_W


class Panel:
    """A rectangle of the picture with a title and an inner plot area."""

    def __init__(self, svg, x, y, w, h, title, margins=(80, 18, 38, 48)):
        self.svg, self.x, self.y, self.w, self.h = svg, x, y, w, h
        ml, mr, mt, mb = margins
        self.left, self.right = x + ml, x + w - mr
        self.top, self.bottom = y + mt, y + h - mb
        svg.rect(x + 0.5, y + 0.5, w - 1, h - 1, fill="#ffffff", stroke="#dddddd", extra=' rx="6"')
        svg.text(x + 14, y + 24, title, size=15, weight="bold")

    def message(self, s):
        self.svg.text((self.left + self.right) / 2, (self.top + self.bottom) / 2, s,
                      size=14, anchor="middle", fill="#888888")


def draw_axes(panel, xr, yr, xlabel, ylabel):
    """Frame, grid and tick labels. xr/yr are nice_ticks results; returns (sx, sy)."""
    svg = panel.svg
    x0, x1, xstep, xticks = xr
    y0, y1, ystep, yticks = yr
    L, R, T, B = panel.left, panel.right, panel.top, panel.bottom

    def sx(v):
        return L + (v - x0) / (x1 - x0) * (R - L)

    def sy(v):
        return B - (v - y0) / (y1 - y0) * (B - T)

    kilo = max(abs(x0), abs(x1)) >= 10000
    for t in xticks:
        px = sx(t)
        svg.line(px, T, px, B, stroke="#ececec")
        svg.line(px, B, px, B + 4, stroke="#444")
        svg.text(px, B + 18, fmt_tick(t, xstep, kilo), size=12, anchor="middle")
    widest = 0.0
    for t in yticks:
        py = sy(t)
        svg.line(L, py, R, py, stroke="#ececec")
        svg.line(L - 4, py, L, py, stroke="#444")
        s = fmt_tick(t, ystep)
        widest = max(widest, text_width(s, 12))
        svg.text(L - 7, py, s, size=12, anchor="end", vcenter=True)
    svg.rect(L, T, R - L, B - T, stroke="#444")
    svg.text((L + R) / 2, B + 38, xlabel, size=13, anchor="middle")
    ylx = max(panel.x + 16, L - 7 - widest - 12)
    svg.text(ylx, (T + B) / 2, ylabel, size=13, anchor="middle", rotate=-90)
    return sx, sy


def sample_path(pts, every=5.0):
    """Points along a pixel polyline, spaced at most `every` px (for legend placement)."""
    out = list(pts[:1])
    for (ax, ay), (bx, by) in zip(pts, pts[1:]):
        n = max(1, int(math.hypot(bx - ax, by - ay) / every))
        out.extend((ax + (bx - ax) * i / n, ay + (by - ay) * i / n) for i in range(1, n + 1))
    return out


def draw_legend(panel, entries, pixel_paths, per_col=8):
    """entries: [(label, colour, dash, marker)]; placed in the emptiest corner of the plot."""
    if not entries:
        return
    svg = panel.svg
    fs, row_h, sw = 12, 17, 22
    ncol = (len(entries) + per_col - 1) // per_col
    nrow = min(len(entries), per_col)
    col_w = sw + 8 + max(text_width(e[0], fs) for e in entries) + 12
    bw, bh = ncol * col_w + 8, nrow * row_h + 8
    pad = 8
    L, R, T, B = panel.left, panel.right, panel.top, panel.bottom
    corners = [(R - pad - bw, T + pad), (L + pad, T + pad),
               (R - pad - bw, B - pad - bh), (L + pad, B - pad - bh)]
    samples = [p for path in pixel_paths for p in sample_path(path)]
    best, best_n = corners[0], None
    for cx, cy in corners:
        n = sum(1 for px, py in samples if cx - 4 <= px <= cx + bw + 4 and cy - 4 <= py <= cy + bh + 4)
        if best_n is None or n < best_n:
            best, best_n = (cx, cy), n
    bx, by = best
    svg.rect(bx, by, bw, bh, fill="#ffffff", stroke="#bbbbbb", extra=' fill-opacity="0.9" rx="3"')
    for i, (label, colour, dash, marker) in enumerate(entries):
        cx = bx + 8 + (i // per_col) * col_w
        cy = by + 4 + (i % per_col) * row_h + row_h / 2
        d = ' stroke-dasharray="%s"' % dash if dash else ""
        svg.line(cx, cy, cx + sw, cy, stroke=colour, width=2, extra=d)
        if marker:
            svg.circle(cx + sw / 2, cy, 3.5, colour)
        svg.text(cx + sw + 6, cy, label, size=fs, vcenter=True)


def plot_lines(svg, panel, lines, xr, yr, xlabel, ylabel, legend=True):
    """lines: [(label, colour, [(step, value)], dash, marker)]."""
    sx, sy = draw_axes(panel, xr, yr, xlabel, ylabel)
    paths = []
    for label, colour, pts, dash, marker in lines:
        pix = [(sx(x), sy(y)) for x, y in pts]
        paths.append(pix)
        if len(pix) > 1:
            svg.polyline(pix, colour, dash=dash)
        if marker or len(pix) == 1:
            for px, py in pix:
                svg.circle(px, py, 3.5, colour)
    if legend:
        draw_legend(panel, [(l, c, d, m) for l, c, p, d, m in lines if p], paths)


def value_range(point_lists, include_zero=False):
    vals = [v for pts in point_lists for _, v in pts]
    lo, hi = min(vals), max(vals)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return lo, hi


# ----------------------------------------------------------------------------- panels


def panel_loss(svg, box, data, xr):
    p = Panel(svg, *box, title="Loss")
    ce = series(data["train"], "ce")
    val = series(data["eval"], "val_loss")
    lines = []
    if ce:
        lines.append(("train cross-entropy", PALETTE[0], ce, None, False))
    if val:
        lines.append(("validation loss", PALETTE[3], val, None, True))
    if not lines:
        draw_axes(p, xr, nice_ticks(0, 1), "step", "loss (nats/token)")
        p.message("no finite loss values")
        return
    yr = padded_ticks(*value_range([l[2] for l in lines]))
    plot_lines(svg, p, lines, xr, yr, "step", "loss (nats/token)")


def panel_lr(svg, box, data, xr):
    p = Panel(svg, *box, title="Learning rate")
    lr = series(data["train"], "lr")
    if not lr:
        draw_axes(p, xr, nice_ticks(0, 1), "step", "learning rate")
        p.message("no learning-rate values")
        return
    yr = padded_ticks(*value_range([lr], include_zero=True), floor_zero=True)
    plot_lines(svg, p, [("lr", PALETTE[2], lr, None, False)], xr, yr, "step", "learning rate",
               legend=False)


def panel_sparsity(svg, box, data, xr):
    p = Panel(svg, *box, title="ReGLU sparsity per layer")
    layers = per_layer_series(data["router"], "reglu_sparsity")
    yr = nice_ticks(0.0, 1.0)
    if not layers:
        draw_axes(p, xr, yr, "step", "fraction of zero activations")
        p.message("no router records")
        return
    n = max(layers) + 1
    colours = layer_colours(n)
    dashes = [None, "6,3", "2,3"]
    lines = []
    for i in sorted(layers):
        dash = dashes[(i // len(PALETTE)) % len(dashes)] if n <= 3 * len(PALETTE) else None
        lines.append(("layer %d" % i, colours[i], layers[i], dash, False))
    plot_lines(svg, p, lines, xr, yr, "step", "fraction of zero activations")


def panel_expert_load(svg, box, data):
    routers = [r for r in data["router"] if isinstance(r.get("expert_load"), list)
               and any(isinstance(row, list) and row for row in r["expert_load"])]
    if not routers:
        p = Panel(svg, *box, title="Expert load")
        p.message("no router records")
        return
    rec = routers[-1]
    rows = [row if isinstance(row, list) else [] for row in rec["expert_load"]]
    n_layers = len(rows)
    n_exp = max(len(row) for row in rows)
    uniform = 1.0 / n_exp
    p = Panel(svg, *box, title="Expert load at step %d (last router record)" % step_of(rec),
              margins=(72, 112, 38, 48))
    L, R, T, B = p.left, p.right, p.top, p.bottom
    cw, ch = (R - L) / n_exp, (B - T) / n_layers

    # Colour scale: log2(load / uniform) mapped onto [-1, 1] with span +-m octaves.
    ratios = [num(v) / uniform for row in rows for v in row if num(v) is not None and num(v) > 0]
    worst = max([abs(math.log2(r)) for r in ratios] + [1.0])
    m = min(3, max(1, math.ceil(worst - 1e-9)))

    def pos(frac):
        if frac is None:
            return None
        if frac <= 0:
            return -1.0
        return max(-1.0, min(1.0, math.log2(frac / uniform) / m))

    label_cells = n_exp <= 16 and ch >= 12
    cell_fs = max(8.0, min(12.0, ch * 0.45, cw / (3.2 * CHAR_W)))
    one_decimal = cw >= text_width("00.0", cell_fs) + 4
    gap = 1 if cw >= 6 and ch >= 6 else 0
    for li, row in enumerate(rows):
        for ei in range(n_exp):
            v = num(row[ei]) if ei < len(row) else None
            t = pos(v)
            x, y = L + ei * cw, T + li * ch
            fill = "#dddddd" if t is None else lerp_colour(DIVERGING, t)
            svg.rect(x, y, cw, ch, fill=fill, stroke="#ffffff" if gap else "none", width=gap)
            if label_cells and v is not None:
                s = ("%.1f" if one_decimal else "%.0f") % (v * 100.0)
                svg.text(x + cw / 2, y + ch / 2, s, size=round(cell_fs, 1), anchor="middle",
                         fill="#ffffff" if abs(t) > 0.5 else "#222", vcenter=True)
    svg.rect(L, T, R - L, B - T, stroke="#444")

    # Row / column labels, thinned out when the cells are small.
    row_every = max(1, math.ceil(14 / ch))
    for li in range(0, n_layers, row_every):
        svg.text(L - 7, T + (li + 0.5) * ch, "layer %d" % li, size=12, anchor="end", vcenter=True)
    col_every = 1
    while cw * col_every < text_width(str(n_exp - 1), 12) + 6:
        col_every = {1: 2, 2: 4, 4: 5}.get(col_every, col_every * 2)
    for ei in range(0, n_exp, col_every):
        svg.text(L + (ei + 0.5) * cw, B + 18, str(ei), size=12, anchor="middle")
    note = "expert" + (" (cells: %% of assignments; uniform 1/%d = %s)" % (n_exp, fmt_pct(uniform))
                       if label_cells else " (uniform 1/%d = %s)" % (n_exp, fmt_pct(uniform)))
    svg.text((L + R) / 2, B + 38, note, size=13, anchor="middle")

    # Colour legend: vertical bar, ticks at powers of two of the uniform share.
    gx, gw = R + 14, 14
    gid = "loadscale"
    stops = "".join('<stop offset="%g" stop-color="%s"/>' % ((1 - (pp + 1) / 2), c)
                    for pp, c in reversed(DIVERGING))
    svg.defs.append('<linearGradient id="%s" x1="0" y1="0" x2="0" y2="1">%s</linearGradient>'
                    % (gid, stops))
    svg.rect(gx, T, gw, B - T, fill="url(#%s)" % gid, stroke="#444")
    svg.text(gx - 2, T - 14, "load / uniform", size=12)
    for j in range(-m, m + 1):
        ty = T + (1 - (j / m + 1) / 2) * (B - T)
        ratio = 2.0 ** j
        rs = ("%g" % ratio)
        prefix = ("\u2264" if j == -m else "\u2265" if j == m else "")
        svg.line(gx + gw, ty, gx + gw + 4, ty, stroke="#444")
        svg.text(gx + gw + 7, ty, "%s\u00d7%s" % (prefix, rs), size=12, vcenter=True)
        svg.text(gx + gw + 7, ty + 13, fmt_pct(ratio * uniform), size=10, fill="#666", vcenter=True)


# ----------------------------------------------------------------------------- main


def render(run_dir, data):
    svg = Svg(WIDTH, HEIGHT)
    train = data["train"]
    last = train[-1]
    last_step = step_of(last)
    name = os.path.basename(os.path.normpath(os.path.abspath(run_dir))) or run_dir
    evals = [r for r in data["eval"] if num(r.get("val_loss")) is not None]
    if evals:
        e = evals[-1]
        vl = "last val loss %.4f" % num(e["val_loss"])
        if num(e.get("val_ppl")) is not None:
            vl += " (ppl %.3g)" % num(e["val_ppl"])
        if step_of(e) != last_step:
            vl += " at step %d" % step_of(e)
    else:
        vl = "no validation yet"
    svg.text(20, 32, "%s \u2014 step %d \u2014 %s" % (name, last_step, vl), size=20, weight="bold")
    sub = []
    for key, fmt in (("loss", "loss %.4f"), ("ce", "ce %.4f"), ("lbl", "lbl %.4f"), ("z", "z %.4g"),
                     ("grad_norm", "grad norm %.3g"), ("tokens", "tokens %s"),
                     ("tokens_per_s", "%s tok/s"), ("elapsed_s", "elapsed %s")):
        v = num(last.get(key))
        if v is None:
            continue
        if key == "tokens":
            sub.append(fmt % human(v))
        elif key == "tokens_per_s":
            sub.append(fmt % human(v))
        elif key == "elapsed_s":
            sub.append(fmt % duration(v))
        else:
            sub.append(fmt % v)
    if sub:
        svg.text(20, 52, "last train record: " + "  \u00b7  ".join(sub), size=12, fill="#555")

    steps = [float(step_of(r)) for k in ("train", "eval", "router") for r in data[k]]
    xr = nice_ticks(min(0.0, min(steps)), max(steps), target=6)
    pw, ph, gap, top = (WIDTH - 60) // 2, (HEIGHT - 66 - 15 - 14) // 2, 20, 66
    boxes = [(20, top, pw, ph), (20 + pw + gap, top, pw, ph),
             (20, top + ph + 14, pw, ph), (20 + pw + gap, top + ph + 14, pw, ph)]
    panel_loss(svg, boxes[0], data, xr)
    panel_lr(svg, boxes[1], data, xr)
    panel_sparsity(svg, boxes[2], data, xr)
    panel_expert_load(svg, boxes[3], data)
    return svg.render()


def human(v):
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return "%.3g%s" % (v / div, suf)
    return "%.3g" % v


def duration(s):
    if s < 120:
        return "%.0f s" % s
    if s < 7200:
        return "%.1f min" % (s / 60)
    return "%.1f h" % (s / 3600)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding metrics.jsonl")
    ap.add_argument("-o", "--output", metavar="OUT.svg",
                    help="output file (default: RUN_DIR/metrics.svg)")
    args = ap.parse_args(argv)
    path = os.path.join(args.run_dir, "metrics.jsonl")
    out = args.output or os.path.join(args.run_dir, "metrics.svg")
    try:
        data = load_metrics(path)
        svg = render(args.run_dir, data)
        with open(out, "w", encoding="utf-8") as f:
            f.write(svg)
    except MetricsError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    print("wrote %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Small inline SVG plots, drawn on the server (no JavaScript library, nothing fetched from the network)."""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup


def _num(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def interval_bar(value: float | None, low: float | None = None, high: float | None = None, width: int = 90) -> Markup:
    """A 0..1 axis with the value as a dot and its interval as a whisker."""
    if not _num(value):
        return Markup("")
    def x(v: float) -> float:
        return 2 + (width - 4) * min(max(v, 0.0), 1.0)
    parts = [f'<svg class="ibar" width="{width}" height="10" viewBox="0 0 {width} 10" role="img">',
             f'<line x1="2" y1="5" x2="{width - 2}" y2="5" stroke="#ddd"/>']
    if _num(low) and _num(high):
        parts.append(f'<line x1="{x(low):.1f}" y1="5" x2="{x(high):.1f}" y2="5" stroke="#357" stroke-width="2"/>')
    parts.append(f'<circle cx="{x(value):.1f}" cy="5" r="3" fill="#146"/></svg>')
    return Markup("".join(parts))


def layer_curve(layer_scores: dict[str, float | None], chosen: str | None, title: str = "", width: int = 640, height: int = 220) -> Markup:
    """Score of each candidate layer on the selection data, in the model's layer order; the chosen layer marked."""
    names = list(layer_scores)
    points = [(i, layer_scores[n]) for i, n in enumerate(names) if _num(layer_scores[n])]
    if not points:
        return Markup("<p class='muted'>no layer scores</p>")
    left, right, top, bottom = 46, 10, 20, 60
    ys = [v for _, v in points]
    lo, hi = min(0.0, min(ys)), max(ys) * 1.05 or 1.0
    def px(i: float) -> float:
        return left + (width - left - right) * (i / max(len(names) - 1, 1))
    def py(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - lo) / (hi - lo or 1))
    out = [f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{left}" y="13" class="ptitle">{escape(title)}</text>',
           f'<line x1="{left}" y1="{py(lo):.1f}" x2="{width - right}" y2="{py(lo):.1f}" stroke="#999"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{py(lo):.1f}" stroke="#999"/>']
    for t in range(5):
        v = lo + (hi - lo) * t / 4
        out.append(f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end" class="tick">{v:.2f}</text>')
    path = " ".join(f"{'M' if k == 0 else 'L'}{px(i):.1f},{py(v):.1f}" for k, (i, v) in enumerate(points))
    out.append(f'<path d="{path}" fill="none" stroke="#357" stroke-width="1.5"/>')
    step = max(1, math.ceil(len(names) / 24))
    for i, v in points:
        is_chosen = names[i] == chosen
        out.append(f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="{5 if is_chosen else 2.5}" fill="{"#c33" if is_chosen else "#357"}">'
                   f'<title>{escape(names[i])}: {v:.4f}{" (chosen)" if is_chosen else ""}</title></circle>')
    for i, name in enumerate(names):
        if i % step == 0 or name == chosen:
            label = escape(name if len(name) <= 18 else name[:17] + "…")
            out.append(f'<text transform="translate({px(i):.1f},{height - bottom + 10}) rotate(45)" class="tick{" chosen" if name == chosen else ""}">{label}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def strip_plot(points: list[tuple[str, float, str | None]], width: int = 640, height: int = 120, label: str = "ceiled score") -> Markup:
    """Distribution of scores on [0, 1]: one dot per model (name on hover), a histogram behind."""
    vals = [(name, v, href) for name, v, href in points if _num(v)]
    left, right = 20, 20
    def px(v: float) -> float:
        return left + (width - left - right) * min(max(v, 0.0), 1.0)
    out = [f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="score distribution">']
    bins = [0] * 20
    for _, v, _ in vals:
        bins[min(int(min(max(v, 0), 1) * 20), 19)] += 1
    peak = max(bins) or 1
    for k, n in enumerate(bins):
        if n:
            h = 50 * n / peak
            out.append(f'<rect x="{px(k / 20):.1f}" y="{70 - h:.1f}" width="{(width - left - right) / 20 - 1:.1f}" height="{h:.1f}" fill="#cde"/>')
    out.append(f'<line x1="{left}" y1="70" x2="{width - right}" y2="70" stroke="#999"/>')
    for t in range(6):
        out.append(f'<text x="{px(t / 5):.1f}" y="86" text-anchor="middle" class="tick">{t / 5:.1f}</text>')
    for j, (name, v, href) in enumerate(vals):
        dot = f'<circle cx="{px(v):.1f}" cy="{60 - (j % 5) * 8}" r="4" fill="#146"><title>{escape(name)}: {v:.4f}</title></circle>'
        out.append(f'<a href="{escape(href)}">{dot}</a>' if href else dot)
    out.append(f'<text x="{width / 2}" y="104" text-anchor="middle" class="tick">{escape(label)} (clipped to [0, 1])</text></svg>')
    return Markup("".join(out))

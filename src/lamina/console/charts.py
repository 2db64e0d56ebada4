"""Line charts drawn server-side as inline SVG: no script, no library, readable
by screen readers (a title, and each point's value as a tooltip and a table)."""

from __future__ import annotations

import datetime
from html import escape

from lamina.console.metrics import Series

WIDTH, HEIGHT = 340, 150
_LEFT, _RIGHT, _TOP, _BOTTOM = 54, 8, 10, 22


def _shown(value: float, unit: str) -> str:
    if unit == "USD":
        # Per-minute costs are millionths of a dollar: keep the axis label short.
        return f"${value:.2f}" if value >= 0.01 else f"${value:.1e}"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:g}"


def _clock(epoch_s: int, span_s: int) -> str:
    at = datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc)
    return at.strftime("%H:%M" if span_s <= 86400 else "%m-%d %H:%M")


def line_chart(series: Series, start_s: int, end_s: int, chart_id: str) -> str:
    """An <svg> of the series over [start, end): one circle per point."""
    span = max(end_s - start_s, 1)
    top = max((value for _at, value in series.points), default=0.0) or 1.0
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM

    def x(at: int) -> float:
        return _LEFT + (at - start_s) / span * plot_w

    def y(value: float) -> float:
        return _TOP + plot_h - value / top * plot_h

    title = escape(series.title)
    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-labelledby="{chart_id}-title">',
        f'<title id="{chart_id}-title">{title}: {len(series.points)} points</title>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{WIDTH - _RIGHT}" '
        f'y2="{_TOP + plot_h}"/>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}"/>',
        f'<text class="tick" x="{_LEFT - 4}" y="{_TOP + 8}" text-anchor="end">'
        f'{escape(_shown(top, series.unit))}</text>',
        f'<text class="tick" x="{_LEFT - 4}" y="{_TOP + plot_h}" text-anchor="end">0</text>',
        f'<text class="tick" x="{_LEFT}" y="{HEIGHT - 6}">{_clock(start_s, span)}</text>',
        f'<text class="tick" x="{WIDTH - _RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
        f'{_clock(end_s, span)}</text>',
    ]
    if series.points:
        line = " ".join(f"{x(at):.1f},{y(value):.1f}" for at, value in series.points)
        parts.append(f'<polyline class="series" points="{line}"/>')
        for at, value in series.points:
            parts.append(
                f'<circle class="point" cx="{x(at):.1f}" cy="{y(value):.1f}" r="3">'
                f'<title>{_clock(at, span)}: {escape(_shown(value, series.unit))}</title></circle>')
    else:
        parts.append(f'<text class="empty" x="{_LEFT + plot_w / 2}" y="{_TOP + plot_h / 2}" '
                     'text-anchor="middle">No data</text>')
    parts.append("</svg>")
    return "".join(parts)

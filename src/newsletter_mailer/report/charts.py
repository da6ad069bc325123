"""The report's charts: SVG drawn by pygal, made safe to inline in a page that opens from the disk.

pygal's SVG links its tooltip script from a CDN by default: `js=[]` leaves it out (the charts
are read, not hovered) and the inline config script that would feed it is removed; no XML declaration, so the SVG sits inline in the HTML. Each chart
gets role="img", an aria-label and <title>/<desc> for screen readers, and carries the same
numbers as a table (its text alternative, shown beside it).
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass

import pygal
from pygal.style import Style

from newsletter_mailer.report.data import Delivery, Feedback

GMAIL_COMPLAINT_LIMIT = 0.003   # Gmail's bulk-sender guideline: stay below 0.3% spam complaints
_STYLE = Style(background="white", plot_background="white", font_family="system-ui, sans-serif",
               colors=("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"),
               title_font_size=18, label_font_size=13, major_label_font_size=13, legend_font_size=13,
               value_font_size=13)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_OPTIONS = dict(js=[], disable_xml_declaration=True, style=_STYLE, width=720, height=360,
                legend_at_bottom=True, truncate_legend=-1, truncate_label=-1, no_data_text="no data")


@dataclass(frozen=True)
class Figure:
    """A chart and its text alternative: the same numbers as a table."""

    title: str
    desc: str
    svg: str
    head: tuple[str, ...]
    rows: list[tuple[str, ...]]


def _finish(chart: pygal.graph.graph.Graph, title: str, desc: str, head: tuple[str, ...],
            rows: list[tuple[str, ...]]) -> Figure:
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))  # pygal's inline config for its (omitted) tooltips
    label = html.escape(f"{title}: {desc}", quote=True)
    start = svg.index(">", svg.index("<svg")) + 1
    svg = (svg[:start].replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)
           + f"<title>{html.escape(title)}</title><desc>{html.escape(desc)}</desc>" + svg[start:])
    return Figure(title, desc, svg, head, rows)


def funnel(stages: list[tuple[str, int]]) -> Figure:
    """sent → delivered → opened → clicked, as far as the numbers are known."""
    chart = pygal.Bar(**_OPTIONS, show_legend=False, print_values=True, title="From sent to clicked")
    chart.x_labels = [label for label, _ in stages]
    chart.add("messages", [n for _, n in stages])
    desc = ", ".join(f"{label} {n}" for label, n in stages)
    return _finish(chart, "From sent to clicked", desc, ("stage", "messages"),
                   [(label, str(n)) for label, n in stages])


def timeline(d: Delivery, f: Feedback) -> Figure | None:
    """Readers' unsubscribes, bounces and complaints per hour after the send (per day past two days)."""
    if d.first_sent is None or not f.times:
        return None
    hours = [max(0, int((at - d.first_sent).total_seconds() // 3600)) for _, at in f.times]
    unit = "hour" if max(hours) < 48 else "day"
    slots = [h if unit == "hour" else h // 24 for h in hours]
    labels = [f"{unit} {i + 1}" for i in range(max(slots) + 1)]
    kinds = sorted({k for k, _ in f.times})
    counts = {k: [0] * len(labels) for k in kinds}
    for (kind, _), slot in zip(f.times, slots):
        counts[kind][slot] += 1
    title = f"Readers' responses per {unit} after sending"
    chart = pygal.StackedBar(**_OPTIONS, title=title, x_label_rotation=0, show_minor_x_labels=len(labels) <= 12)
    chart.x_labels = labels
    for kind in kinds:
        chart.add(kind, counts[kind])
    rows = [(label, *(str(counts[k][i]) for k in kinds)) for i, label in enumerate(labels) if
            any(counts[k][i] for k in kinds)]
    desc = f"{len(f.times)} responses over {len(labels)} {unit}(s) after the first message went out"
    return _finish(chart, title, desc, (unit, *kinds), rows)


def per_day(days: list[tuple[str, dict[str, int]]]) -> Figure | None:
    """SendGrid's daily delivered, unique opens and unique clicks since the send."""
    if not days:
        return None
    names = (("delivered", "delivered"), ("unique_opens", "unique opens"), ("unique_clicks", "unique clicks"))
    chart = pygal.Line(**_OPTIONS, title="SendGrid per day", x_label_rotation=30,
                       show_minor_x_labels=len(days) <= 10)
    chart.x_labels = [day for day, _ in days]
    for metric, label in names:
        chart.add(label, [m[metric] for _, m in days])
    rows = [(day, *(str(m[metric]) for metric, _ in names)) for day, m in days]
    desc = f"{len(days)} day(s) from {days[0][0]} to {days[-1][0]}"
    return _finish(chart, "SendGrid per day", desc, ("day", *(label for _, label in names)), rows)


def trend(issues: list[tuple[str, dt.date, int, float | None, float | None, float | None]]) -> Figure | None:
    """Rates per issue, oldest first: (slug, date, sent, unsubscribe, bounce, complaint rate), with
    Gmail's 0.3% complaint line drawn across."""
    if not issues:
        return None
    title = "Issue by issue: unsubscribes, bounces and complaints (% of sent)"
    chart = pygal.Line(**_OPTIONS, title=title, x_label_rotation=30, value_formatter=lambda v: f"{v:.2f}%")
    chart.x_labels = [slug for slug, *_ in issues]
    for i, name in enumerate(("unsubscribes", "bounces", "complaints"), start=3):
        chart.add(name, [None if row[i] is None else row[i] * 100 for row in issues])
    chart.add("Gmail's complaint limit (0.3%)", [GMAIL_COMPLAINT_LIMIT * 100] * len(issues), show_dots=False,
              stroke_style={"width": 2, "dasharray": "6, 4"})
    rows = [(slug, date.isoformat(), str(sent), *(_pct(r) for r in rates)) for slug, date, sent, *rates in issues]
    desc = f"{len(issues)} issue(s), {issues[0][0]} to {issues[-1][0]}; the dashed line is Gmail's 0.3% complaint limit"
    return _finish(chart, title, desc, ("issue", "date", "sent", "unsubscribes", "bounces", "complaints"), rows)


def _pct(r: float | None) -> str:
    return "—" if r is None else f"{r * 100:.2f}%"

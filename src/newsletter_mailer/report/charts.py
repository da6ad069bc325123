"""The report's charts: SVG drawn by pygal, made safe to inline in a page that opens from the disk.

pygal's SVG links its tooltip script from a CDN by default: `js=[]` leaves it out (the charts
are read, not hovered) and the inline config script that would feed it is removed; no XML declaration, so the SVG sits inline in the HTML. Each chart
gets role="img", an aria-label and <title>/<desc> for screen readers, and carries the same
numbers as a table (its text alternative, shown beside it). The page's caption names the chart, so
pygal draws no title of its own; the y axis gets 4-6 round ticks (pygal's own scale crowds up to 16
labels into a short axis), and the gridlines are faint and solid so that the one dashed, red line,
Gmail's 0.3%, stands out.

Colours: each series has one colour on every chart (SERIES), from the Okabe–Ito palette, which
stays distinct to colour-blind readers; orange, sky blue and black are darkened or lightened just
enough to keep 3:1 (WCAG's contrast for graphics) against the card in light and in dark mode.
Text, gridlines and backgrounds are the page's CSS variables, so the charts follow its dark mode.
pygal names its legend groups `activate-serie-N` in every chart: those ids are prefixed with the
chart's own id, so a page of several charts has no duplicate ids.
"""

from __future__ import annotations


import html
import re
from dataclasses import dataclass, replace

import pygal
from pygal.style import Style

from newsletter_mailer.report.data import Delivery, Feedback
from newsletter_mailer.report.wording import count, first, long_date

GMAIL_COMPLAINT_LIMIT = 0.003   # Gmail's bulk-sender guideline: stay below 0.3% spam complaints
GMAIL_LINE = "Gmail's 0.3% line"   # its legend entry; its tooltip and name:
GMAIL_TITLE = "Gmail's complaint limit (0.3%)"
# Okabe–Ito: blue, sky blue, orange, bluish green, vermillion, reddish purple, black (as grey).
BLUE, SKY, ORANGE, GREEN, VERMILLION, PURPLE, GREY = (
    "#0072b2", "#3a8fc4", "#b87d00", "#009e73", "#d55e00", "#cc79a7", "#7a7a7a")
GMAIL_COLOUR = VERMILLION
SERIES = {  # a series' name (as its legend shows it) -> its colour, the same on every chart
    "messages": BLUE, "delivered": BLUE, "unique opens": SKY, "unique clicks": GREY, "clicks": GREY,
    "unsubscribes": PURPLE, "unsubscribed": PURPLE, "bounces": GREEN, "bounced": GREEN, "soft bounce": SKY,
    "complaints": ORANGE, "complained": ORANGE, GMAIL_LINE: GMAIL_COLOUR,
}
_LOOK = dict(background="transparent", plot_background="transparent", font_family="system-ui, sans-serif",
             foreground="var(--ink)", foreground_strong="var(--ink)", foreground_subtle="var(--muted)",
             label_font_size=17, major_label_font_size=17, legend_font_size=17, value_font_size=17,
             guide_stroke_color="var(--rule)", major_guide_stroke_color="var(--rule)",
             guide_stroke_dasharray="none", major_guide_stroke_dasharray="none")
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_CHART_ID = re.compile(r'<svg\b[^>]*\bid="([^"]+)"')
# 560 wide: at 375 px the chart is drawn about half size, so 17 px labels still read as 9-10 px
_OPTIONS = dict(js=[], disable_xml_declaration=True, width=560, height=340,
                legend_at_bottom=True, truncate_legend=-1, truncate_label=-1, no_data_text="no data")
NO_FUNNEL = "No delivery, open or click data yet: SendGrid's statistics or its Event Webhook provide them"


@dataclass(frozen=True)
class Figure:
    """A chart and its text alternative: the same numbers as a table."""

    title: str
    desc: str
    svg: str
    head: tuple[str, ...]
    rows: list[tuple[str, ...]]


def _style(*names: str) -> Style:
    """The series' colours, in the order they are added."""
    colours = tuple(SERIES[n] for n in names)
    return Style(**_LOOK, colors=colours, value_colors=("#ffffff",) * len(colours))  # on the bar: AA on each


def _finish(chart: pygal.graph.graph.Graph, title: str, desc: str, head: tuple[str, ...],
            rows: list[tuple[str, ...]]) -> Figure:
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))  # pygal's inline config for its (omitted) tooltips
    chart_id = _CHART_ID.search(svg).group(1)
    svg = svg.replace('id="activate-serie-', f'id="{chart_id}-activate-serie-')
    label = html.escape(f"{title}: {desc}", quote=True)
    start = svg.index(">", svg.index("<svg")) + 1
    svg = (svg[:start].replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)
           + f"<title>{html.escape(title)}</title><desc>{html.escape(desc)}</desc>" + svg[start:])
    return Figure(title, desc, svg, head, rows)


def y_ticks(top: float, whole: bool = False, unit: str = "") -> list[dict]:
    """4-6 round ticks from 0 to at least `top` (whole numbers only for counts), as pygal y_labels."""
    for exp in range(-6, 12):
        for base in (1, 2, 2.5, 5):
            step = base * 10.0 ** exp
            if (whole and step != int(step)) or step * 5 < top:
                continue
            n = max(3, -int(-round(top / step, 9) // 1))   # ceil, but at least 0..3 steps
            return [{"value": i * step, "label": f"{round(i * step, 9):g}{unit}"} for i in range(n + 1)]
    raise ValueError(top)


def funnel(stages: list[tuple[str, int]]) -> Figure:
    """sent → delivered → opened → clicked, as far as the numbers are known: with "sent" alone there
    is nothing to compare, so a sentence says where the rest comes from (the table stays)."""
    title, rows = "From sent to clicked", [(label, str(n)) for label, n in stages]
    if len(stages) < 2:
        return Figure(title, NO_FUNNEL, "", ("stage", "messages"), rows)
    chart = pygal.Bar(**_OPTIONS, style=_style("messages"), show_legend=False, print_values=True,
                      y_labels=y_ticks(max(n for _, n in stages), whole=True))
    chart.x_labels = [label for label, _ in stages]
    chart.add("messages", [n for _, n in stages])
    desc = ", ".join(f"{label} {n}" for label, n in stages)
    return _finish(chart, title, desc, ("stage", "messages"), rows)


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
    top = max(sum(counts[k][i] for k in kinds) for i in range(len(labels)))
    chart = pygal.StackedBar(**_OPTIONS, style=_style(*kinds), x_label_rotation=0,
                             show_minor_x_labels=len(labels) <= 12,
                             y_labels=y_ticks(top, whole=True))
    chart.x_labels = labels
    for kind in kinds:
        chart.add(kind, counts[kind])
    rows = [(label, *(str(counts[k][i]) for k in kinds)) for i, label in enumerate(labels) if
            any(counts[k][i] for k in kinds)]
    desc = f"{count(len(f.times), 'response')} in {first(len(labels), unit)} after the first message went out"
    return _finish(chart, title, desc, (unit, *kinds), rows)


def per_day(days: list[tuple[str, dict[str, int]]]) -> Figure | None:
    """SendGrid's daily delivered, unique opens and unique clicks since the send."""
    if not days:
        return None
    names = (("delivered", "delivered"), ("unique_opens", "unique opens"), ("unique_clicks", "unique clicks"))
    top = max(m[metric] for _, m in days for metric, _ in names)
    chart = pygal.Line(**_OPTIONS, style=_style(*(label for _, label in names)), x_label_rotation=30,
                       show_minor_x_labels=len(days) <= 10,
                       y_labels=y_ticks(top, whole=True))
    chart.x_labels = [day for day, _ in days]
    for metric, label in names:
        chart.add(label, [m[metric] for _, m in days])
    rows = [(day, *(str(m[metric]) for metric, _ in names)) for day, m in days]
    desc = f"{count(len(days), 'day')} from {long_date(days[0][0])} to {long_date(days[-1][0])}"
    return _finish(chart, "SendGrid per day", desc, ("day", *(label for _, label in names)), rows)


def trend(issues: list[tuple]) -> Figure | None:
    """Rates per issue, oldest first: (slug, date, sent, unsubscribe, bounce, complaint rate[, click
    rate]), with Gmail's 0.3% complaint line drawn across; the click rate only when an issue has one."""
    if not issues:
        return None
    with_clicks = any(len(row) > 6 and row[6] is not None for row in issues)
    kinds = ("unsubscribes", "bounces", "complaints") + (("clicks",) if with_clicks else ())
    issues = [tuple(row[:3 + len(kinds)]) + (None,) * (3 + len(kinds) - len(row)) for row in issues]
    title = ("Issue by issue: unsubscribes, bounces, complaints and clicks (% of sent)" if with_clicks else
             "Issue by issue: unsubscribes, bounces and complaints (% of sent)")
    series = [(name, [None if row[i] is None else row[i] * 100 for row in issues])
              for i, name in enumerate(kinds, start=3)]
    top = max([GMAIL_COMPLAINT_LIMIT * 100] + [v for _, values in series for v in values if v is not None])
    # at most 6 slugs under the axis, cut to 14 characters (the table has them whole): a long one
    # would leave no height to the plot
    names = [name for name, _ in series]
    chart = pygal.Line(**{**_OPTIONS, "truncate_label": 14}, style=_style(*names, GMAIL_LINE), x_label_rotation=45,
                       y_labels=y_ticks(top, unit="%"), value_formatter=lambda v: f"{v:.2f}%",
                       show_minor_x_labels=len(issues) <= 6, x_labels_major_every=-(-len(issues) // 6))
    # One issue is one point, and a line needs two: the axis gets an empty slot on each side, so
    # Gmail's line is drawn across the chart whatever the number of issues.
    pad = len(issues) == 1
    chart.x_labels = ([""] if pad else []) + [slug for slug, *_ in issues] + ([""] if pad else [])
    for name, values in series:
        chart.add(name, [None, *values, None] if pad else values)
    chart.add(GMAIL_LINE, [GMAIL_COMPLAINT_LIMIT * 100] * len(chart.x_labels), show_dots=False,
              stroke_style={"width": 3, "dasharray": "10, 6"})
    rows = [(slug, date.isoformat(), str(sent), *(_pct(r) for r in rates)) for slug, date, sent, *rates in issues]
    span = issues[0][0] if len(issues) == 1 else f"{issues[0][0]} to {issues[-1][0]}"
    desc = f"{count(len(issues), 'issue')}, {span}; the dashed red line is Gmail's complaint limit (0.3%)"
    figure = _finish(chart, title, desc, ("issue", "date", "sent", *kinds), rows)
    line = f'<g class="series serie-{len(series)} color-{len(series)}"><path'  # the drawn one, not an overlay's
    named = line.replace("><path", f"><title>{html.escape(GMAIL_TITLE, quote=False)}</title><path")
    return replace(figure, svg=figure.svg.replace(line, named, 1))


def _pct(r: float | None) -> str:
    return "—" if r is None else f"{r * 100:.2f}%"

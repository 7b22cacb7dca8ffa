"""`gpuctl bench --plot FILE`: aggregate and per-stream tokens/s against concurrency, each engine measured
beside the published rows (gpuctl.bench.reference), the seed's table as a picture. PNG or SVG, or an HTML
page holding the SVG. matplotlib is an optional extra: `pip install 'gpuctl[plot]'`."""

from __future__ import annotations

import io
from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

from gpuctl.bench import reference
from gpuctl.bench.report import Run
from gpuctl.errors import GpuctlError

FORMATS = (".png", ".svg", ".html")


def check_plot_path(path: Path) -> None:
    """Before a long run: a format gpuctl writes, matplotlib installed, the file writable."""
    if path.suffix.lower() not in FORMATS:
        raise GpuctlError(f"--plot {path}: give a file ending in {', '.join(FORMATS)}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GpuctlError("--plot needs matplotlib: pip install 'gpuctl[plot]'") from None
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise GpuctlError(f"--plot {path}: cannot write: {exc.strerror}") from None


def published_series() -> dict[str, list[reference.ReferenceRow]]:
    """The published rows as series: one per GPU and engine, points by concurrency."""
    series: dict[str, list[reference.ReferenceRow]] = defaultdict(list)
    for row in reference.ROWS:
        series[f"published: {row.gpu_label}, {row.engine_label}"].append(row)
    return {label: sorted(rows, key=lambda r: r.concurrency) for label, rows in series.items()}


def figure(runs: list[Run], title: str) -> Any:
    """The matplotlib figure: aggregate tokens/s (left) and per-stream tokens/s (right), log-2 concurrency."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    fig, (aggregate, per_stream) = plt.subplots(1, 2, figsize=(13, 5.5), layout="constrained")
    for label, rows in published_series().items():
        x = [r.concurrency for r in rows]
        style = {"linestyle": "--", "marker": "o", "markerfacecolor": "none", "alpha": 0.55, "label": label}
        aggregate.plot(x, [r.aggregate_tok_s for r in rows], **style)
        per_stream.plot(x, [r.per_stream_tok_s for r in rows], **style)
    for run in (r for r in runs if r.levels):
        levels = sorted(run.levels, key=lambda level: level.concurrency)
        x = [level.concurrency for level in levels]
        label = f"measured: {run.host} {run.engine_name} ({run.engine_label}, {run.gpu_label})"
        aggregate.plot(x, [level.aggregate_tok_s for level in levels], marker="s", linewidth=2.5, label=label)
        per_stream.plot(x, [level.per_stream_tok_s for level in levels], marker="s", linewidth=2.5, label=label)
    ticks = sorted({r.concurrency for r in reference.ROWS} | {lv.concurrency for run in runs for lv in run.levels})
    for axes, what in ((aggregate, "aggregate tokens/s (all streams)"), (per_stream, "tokens/s per stream")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(ticks, [str(t) for t in ticks])
        axes.set_xlabel("concurrency (streams)")
        axes.set_ylabel(what)
        axes.grid(True, which="both", alpha=0.3)
    aggregate.set_title("Throughput")
    per_stream.set_title("What each user sees")
    handles, labels = aggregate.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize="small")
    fig.suptitle(title)
    return fig


def write_plot(path: Path, runs: list[Run], title: str) -> None:
    """PATH as .png, .svg or .html (the SVG inside a page)."""
    from matplotlib import pyplot as plt

    fig = figure(runs, title)
    try:
        suffix = path.suffix.lower()
        if suffix == ".html":
            svg = io.StringIO()
            fig.savefig(svg, format="svg")
            page = (
                f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title></head>\n"
                f"<body>\n{svg.getvalue()}\n</body></html>\n"
            )
            path.write_text(page)
        else:
            fig.savefig(path, format=suffix.lstrip("."), dpi=120)
    except OSError as exc:
        raise GpuctlError(f"--plot {path}: cannot write: {exc.strerror}") from None
    finally:
        plt.close(fig)

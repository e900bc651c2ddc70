"""The building blocks both dashboards share: the data source variable, Prometheus queries, panel kinds with
their units, and a Prometheus annotation with the fields Grafana reads (the SDK's model lacks titleFormat and
tagKeys)."""

from __future__ import annotations

import typing

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prometheus_model

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
WIDTH = 12
HEIGHT = 8


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query(expr: str, legend: str = "__auto", *, ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    return q.instant() if instant else q.range()


def queries(*pairs: tuple[str, str]) -> list[cogbuilder.Builder[typing.Any]]:
    """(expr, legend) pairs as range queries with refIds A, B, ..."""
    return [query(expr, legend, ref=chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """(value, colour) steps; the first value is None (the base colour)."""
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=colour) for value, colour in steps])
    )


def graph(
    title: str,
    description: str,
    unit: str,
    *pairs: tuple[str, str],
    width: int = WIDTH,
    bars: bool = False,
    stacked: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .targets(queries(*pairs))
        .span(width)
        .height(HEIGHT)
        .min(0)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_model.LegendDisplayMode.LIST)
            .placement(common_model.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(common_model.TooltipDisplayMode.MULTI)
            .sort(common_model.SortOrder.DESCENDING)
        )
    )
    if bars:
        panel = panel.draw_style(common_model.GraphDrawStyle.BARS).fill_opacity(80)
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(common_model.StackingMode.NORMAL))
    return panel


def single_stat(
    title: str, description: str, unit: str, expr: str, legend: str = "__auto", *, width: int = 6
) -> stat.Panel:
    """One number per series, from an instant query."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .with_target(query(expr, legend, instant=True))
        .span(width)
        .height(4)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(common_model.BigValueColorMode.VALUE)
        .graph_mode(common_model.BigValueGraphMode.NONE)
    )


def instant_table(title: str, description: str, expr: str, *, width: int = WIDTH) -> table.Panel:
    """The labels of every series an instant query returns, one row each."""
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, instant=True).format(prometheus_model.PromQueryFormat.TABLE))
        .span(width)
        .height(HEIGHT)
    )


class PrometheusAnnotation(model.AnnotationQuery):
    """An annotation from a Prometheus query: every step where it returns a non-zero value is marked;
    consecutive steps join into one region (a fault window)."""

    def __init__(self, name: str, expr: str, title_format: str, tag_keys: str, icon_color: str) -> None:
        super().__init__(name=name, datasource=DATASOURCE, enable=True, hide=False, icon_color=icon_color, expr=expr)
        self.title_format = title_format
        self.tag_keys = tag_keys

    def to_json(self) -> dict[str, object]:
        return {
            **super().to_json(),
            "titleFormat": self.title_format,
            "tagKeys": self.tag_keys,
            "step": "15s",
            "useValueForTime": False,
        }


class Annotation(cogbuilder.Builder[model.AnnotationQuery]):
    def __init__(self, annotation: PrometheusAnnotation) -> None:
        self._internal = annotation

    def build(self) -> model.AnnotationQuery:
        return self._internal


def numbered(board: model.Dashboard) -> model.Dashboard:
    """Panel ids 1..n in layout order (the SDK leaves them 0; Grafana links and alerts need them unique)."""
    for i, panel in enumerate(board.panels or [], start=1):
        panel.id_val = i
    return board

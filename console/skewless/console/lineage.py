"""Lineage: which sources feed which feature views, and which services serve them.

It is laid out as a three-column graph (source → view → service) for a server-rendered SVG.

`view_lineage`, `service_lineage` and `source_lineage` pick the part of the registry
around one object; `layout` places it. A column with more than `max_per_column` nodes
shows the first ones and a "+N more" node, so a source read by a thousand views still
draws quickly and legibly. Every node links to its page; the page also lists the edges
as text, for readers that do not see the picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from skewless.v1 import registry_pb2

__all__ = [
    "Edge",
    "Layout",
    "Lineage",
    "PlacedEdge",
    "PlacedNode",
    "layout",
    "service_lineage",
    "source_lineage",
    "view_lineage",
]

KINDS = ("source", "view", "service")
_TITLES = {"source": "Sources", "view": "Feature views", "service": "Feature services"}
_PATHS = {"source": "sources", "view": "views", "service": "services"}
_CHAR_WIDTH = 7.3  # px per character of the 12px monospace labels
_NODE_HEIGHT = 28
_GAP = 12
_COLUMN_GAP = 72
_TOP = 34
_MAX_LABEL = 34


@dataclass(frozen=True)
class Edge:
    """A directed edge between two (kind, name) nodes."""

    tail: tuple[str, str]
    head: tuple[str, str]


@dataclass
class Lineage:
    """The nodes of each column and the edges between them.

    Attributes:
        focus: The (kind, name) the page is about, drawn highlighted.
        columns: Node names per kind, in drawing order.
        edges: source → view and view → service edges.

    """

    focus: tuple[str, str]
    columns: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    edges: list[Edge] = field(default_factory=list)

    def add(self, kind: str, name: str) -> None:
        """Adds a node once."""
        if name not in self.columns[kind]:
            self.columns[kind].append(name)

    def link(self, tail: tuple[str, str], head: tuple[str, str]) -> None:
        """Adds both nodes and the edge between them once."""
        self.add(*tail)
        self.add(*head)
        edge = Edge(tail, head)
        if edge not in self.edges:
            self.edges.append(edge)


def _views_of(service: registry_pb2.FeatureService) -> list[str]:
    names: list[str] = []
    for projection in service.projections:
        if projection.feature_view not in names:
            names.append(projection.feature_view)
    return names


def view_lineage(
    view: registry_pb2.FeatureView, services: Iterable[registry_pb2.FeatureService]
) -> Lineage:
    """The view's source, the view, and every service that serves it."""
    graph = Lineage(focus=("view", view.name))
    graph.link(("source", view.source), ("view", view.name))
    for service in services:
        if view.name in _views_of(service):
            graph.link(("view", view.name), ("service", service.name))
    return graph


def service_lineage(
    service: registry_pb2.FeatureService, views: Iterable[registry_pb2.FeatureView]
) -> Lineage:
    """The sources of the service's views, those views, and the service."""
    by_name = {v.name: v for v in views}
    graph = Lineage(focus=("service", service.name))
    for name in _views_of(service):
        view = by_name.get(name)
        if view is not None:
            graph.link(("source", view.source), ("view", name))
        graph.link(("view", name), ("service", service.name))
    return graph


def source_lineage(
    source: registry_pb2.DataSource,
    views: Iterable[registry_pb2.FeatureView],
    services: Iterable[registry_pb2.FeatureService],
) -> Lineage:
    """The source, the views that read it, and the services that serve those views."""
    graph = Lineage(focus=("source", source.name))
    graph.add("source", source.name)
    reading = [v.name for v in views if v.source == source.name]
    for name in reading:
        graph.link(("source", source.name), ("view", name))
    wanted = set(reading)
    for service in services:
        for name in _views_of(service):
            if name in wanted:
                graph.link(("view", name), ("service", service.name))
    return graph


@dataclass(frozen=True)
class PlacedNode:
    """A node box of the drawing.

    Attributes:
        kind: `source`, `view`, `service`, or `more` for a "+N more" box.
        name: The object's name (empty for `more`).
        label: The text drawn (shortened with an ellipsis when long).
        href: The node's page, or "" for `more` boxes.
        focus: Whether it is the object the page is about.

    """

    kind: str
    name: str
    label: str
    href: str
    focus: bool
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class PlacedEdge:
    """An edge of the drawing as an SVG path, with its text alternative."""

    path: str
    text: str


@dataclass(frozen=True)
class Layout:
    """A placed lineage graph: the SVG size, column headings, node boxes and edges."""

    width: float
    height: float
    headings: list[tuple[float, str]]
    nodes: list[PlacedNode]
    edges: list[PlacedEdge]
    hidden: int


def _label(name: str) -> str:
    return name if len(name) <= _MAX_LABEL else name[: _MAX_LABEL - 1] + "…"


def layout(graph: Lineage, *, max_per_column: int = 30) -> Layout:
    """Places the graph in columns: sources, views, services (empty columns are skipped).

    Args:
        graph: The lineage to draw.
        max_per_column: Nodes drawn per column before a "+N more" box.

    Returns:
        Coordinates for the SVG template; `hidden` counts the nodes left out.

    """
    kinds = [k for k in KINDS if graph.columns[k]]
    shown: dict[str, list[str]] = {}
    hidden = 0
    for kind in kinds:
        names = graph.columns[kind]
        if graph.focus[0] == kind and graph.focus[1] in names[max_per_column:]:
            names = [graph.focus[1], *[n for n in names if n != graph.focus[1]]]
        shown[kind] = names[:max_per_column]
        hidden += len(names) - len(shown[kind])
    rows = max((len(graph.columns[k][: max_per_column + 1]) for k in kinds), default=1)
    height = _TOP + rows * (_NODE_HEIGHT + _GAP)
    nodes: list[PlacedNode] = []
    where: dict[tuple[str, str], PlacedNode] = {}
    headings: list[tuple[float, str]] = []
    x = 1.0
    for kind in kinds:
        extra = len(graph.columns[kind]) - len(shown[kind])
        labels = [_label(n) for n in shown[kind]] + ([f"+{extra} more"] if extra else [])
        width = max(len(label) for label in labels) * _CHAR_WIDTH + 24
        count = len(labels)
        top = _TOP + (rows - count) * (_NODE_HEIGHT + _GAP) / 2
        headings.append((x, _TITLES[kind]))
        for i, name in enumerate(shown[kind]):
            node = PlacedNode(
                kind=kind,
                name=name,
                label=labels[i],
                href=f"/{_PATHS[kind]}/{quote(name, safe='')}",
                focus=graph.focus == (kind, name),
                x=x,
                y=top + i * (_NODE_HEIGHT + _GAP),
                width=width,
                height=_NODE_HEIGHT,
            )
            nodes.append(node)
            where[(kind, name)] = node
        if extra:
            y = top + len(shown[kind]) * (_NODE_HEIGHT + _GAP)
            nodes.append(PlacedNode("more", "", labels[-1], "", False, x, y, width, _NODE_HEIGHT))
        x += width + _COLUMN_GAP
    edges: list[PlacedEdge] = []
    for edge in graph.edges:
        tail, head = where.get(edge.tail), where.get(edge.head)
        if tail is None or head is None:
            continue
        x1, y1 = tail.x + tail.width, tail.y + tail.height / 2
        x2, y2 = head.x, head.y + head.height / 2
        mid = (x1 + x2) / 2
        edges.append(
            PlacedEdge(
                path=(
                    f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} "
                    f"{mid:.1f},{y2:.1f} {x2 - 6:.1f},{y2:.1f}"
                ),
                text=f"{edge.tail[0]} {edge.tail[1]} → {edge.head[0]} {edge.head[1]}",
            )
        )
    return Layout(
        width=max(x - _COLUMN_GAP + 2, 1.0),
        height=height,
        headings=headings,
        nodes=nodes,
        edges=edges,
        hidden=hidden,
    )

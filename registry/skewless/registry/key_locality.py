"""Whether a feature view's SQL can run split by entity key, and how (the Spark engine).

The Spark engine does not translate a view's SQL into Spark SQL: it runs the view's own
DuckDB SQL on pieces of the source, on Spark's executors. That gives the DuckDB answer
exactly when each output row depends only on rows of the source that land in the same
piece, which this module decides from the SQL's syntax tree (parsed with sqlglot, DuckDB
dialect):

* `ROW_LOCAL`: every output row comes from one source row (projections, casts, `WHERE`,
  `CASE`, deterministic scalar functions over the one relation `source`). Any split
  of the source gives the same rows: the SQL runs on each Arrow batch (`mapInArrow`).
* `KEY_GROUPED`: the SQL also has window functions `PARTITION BY` every entity key, or
  aggregates (`GROUP BY`, `DISTINCT`) whose groups include every entity key, and the
  keys pass through unchanged. All rows of a key must meet: the SQL runs on groups of
  whole keys (`groupBy(bucket of the keys).applyInArrow`).

Anything else is refused with `VIEW_NOT_KEY_LOCAL`, the message naming the construct:
joins and other tables than `source`, subqueries in expressions, set operations,
`LIMIT`/`OFFSET`/`SAMPLE`, windows not partitioned by the keys, aggregates over the
whole source or not grouped by the keys, a key computed from other columns in a grouped
view, and non-deterministic functions (`random()`, `now()`, `uuid()`...), whose values
would differ between the pieces. `ORDER BY` alone is accepted: a view's rows are a set
(the history is stored in its own order).

sqlglot is imported only when a view is analyzed: it comes with the `spark` extra.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from skewless.core.errors import FailedPreconditionError
from skewless.core.names import SOURCE_RELATION

__all__ = ["Locality", "key_locality"]

#: Functions whose value differs from one call (or one piece of the source) to the next.
_NON_DETERMINISTIC = frozenset(
    {
        "random",
        "rand",
        "setseed",
        "uuid",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "now",
        "today",
        "current_date",
        "current_time",
        "current_timestamp",
        "current_localtime",
        "current_localtimestamp",
        "get_current_time",
        "get_current_timestamp",
        "transaction_timestamp",
        "nextval",
        "currval",
    }
)
_NON_DETERMINISTIC_CLASSES = ("Rand", "Uuid", "CurrentTimestamp", "CurrentDate", "CurrentTime")


class Locality(enum.StrEnum):
    """How a view's SQL may be split."""

    ROW_LOCAL = "row_local"
    KEY_GROUPED = "key_grouped"


class _NotKeyLocal(Exception):
    def __init__(self, construct: str) -> None:
        super().__init__(construct)
        self.construct = construct


def _column_names(nodes: Sequence[Any]) -> set[str]:
    from sqlglot import exp

    return {n.name for n in nodes if isinstance(n, exp.Column)}


def _keys_listed(nodes: Sequence[Any], keys: Sequence[str]) -> bool:
    return set(keys) <= _column_names(nodes)


def _sql(node: Any, limit: int = 80) -> str:
    text = str(node.sql(dialect="duckdb"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _function_name(node: Any) -> str:
    from sqlglot import exp

    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.sql_name()).lower()


def _check_select(select: Any, keys: Sequence[str], ctes: set[str]) -> bool:
    """Checks one SELECT (not its subqueries); returns whether it groups by key."""
    from sqlglot import exp

    grouped = False
    if select.args.get("joins"):
        raise _NotKeyLocal(f"a JOIN ({_sql(select.args['joins'][0])})")
    for part, name in (("limit", "LIMIT"), ("offset", "OFFSET"), ("sample", "SAMPLE")):
        if select.args.get(part) is not None:
            raise _NotKeyLocal(name)
    from_ = select.args.get("from") or select.args.get("from_")
    if from_ is not None:
        source = from_.this
        if isinstance(source, exp.Table):
            if (
                not isinstance(source.this, exp.Identifier)
                or (source.name != SOURCE_RELATION and source.name not in ctes)
                or source.args.get("db")
            ):
                raise _NotKeyLocal(
                    f"reading {_sql(source)} (only the relation {SOURCE_RELATION!r} is split)"
                )
        elif not isinstance(source, exp.Subquery):
            raise _NotKeyLocal(f"reading {_sql(source)}")
    group = select.args.get("group")
    if group is not None:
        if not _keys_listed(group.expressions, keys):
            raise _NotKeyLocal(f"GROUP BY without every entity key ({', '.join(keys)})")
        grouped = True
    distinct = select.args.get("distinct")
    if distinct is not None:
        on = distinct.args.get("on")
        listed = on.expressions if on is not None else select.expressions
        if not (
            _keys_listed(listed, keys)
            or (on is None and any(isinstance(e, exp.Star) for e in select.expressions))
        ):
            raise _NotKeyLocal(f"DISTINCT without every entity key ({', '.join(keys)})")
        grouped = True
    aggregates = [
        node
        for node in select.find_all(exp.AggFunc)
        if node.find_ancestor(exp.Window, exp.Select) is select  # not a window's aggregate
    ]
    if aggregates and group is None:
        raise _NotKeyLocal(f"an aggregate over the whole source ({_sql(aggregates[0])})")
    return grouped


def _analyze(tree: Any, keys: Sequence[str]) -> Locality:
    from sqlglot import exp

    if not isinstance(tree, exp.Select | exp.Subquery | exp.With):
        if isinstance(tree, exp.SetOperation):
            raise _NotKeyLocal(f"{type(tree).__name__.upper()} of queries")
        raise _NotKeyLocal(f"a statement that is not one SELECT ({_sql(tree)})")
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    grouped = False
    for node in tree.walk():
        if isinstance(node, exp.SetOperation):
            raise _NotKeyLocal(f"{type(node).__name__.upper()} of queries")
        if isinstance(node, exp.Subquery) and not isinstance(node.parent, exp.From):
            raise _NotKeyLocal(f"a subquery in an expression ({_sql(node)})")
        if isinstance(node, exp.Select) and isinstance(node.parent, exp.In | exp.Exists):
            raise _NotKeyLocal(f"a subquery in an expression ({_sql(node)})")
        if isinstance(node, exp.Select):
            grouped = _check_select(node, keys, ctes) or grouped
        elif isinstance(node, exp.Join):
            raise _NotKeyLocal(f"a JOIN ({_sql(node)})")
        elif isinstance(node, exp.Window):
            partition = node.args.get("partition_by") or []
            if not _keys_listed(partition, keys):
                raise _NotKeyLocal(
                    f"a window not partitioned by every entity key ({', '.join(keys)}): "
                    f"{_sql(node)}"
                )
            grouped = True
        elif isinstance(node, exp.Func):
            name = _function_name(node)
            if name in _NON_DETERMINISTIC or type(node).__name__ in _NON_DETERMINISTIC_CLASSES:
                raise _NotKeyLocal(f"the non-deterministic function {name}()")
    if not grouped:
        return Locality.ROW_LOCAL
    # The pieces are cut by the source's keys: every query level must pass them through.
    for select in tree.find_all(exp.Select):
        for projection in select.expressions:
            if isinstance(projection, exp.Alias) and projection.alias in keys:
                inner = projection.this
                if not (isinstance(inner, exp.Column) and inner.name == projection.alias):
                    raise _NotKeyLocal(
                        f"the entity key {projection.alias!r} computed as {_sql(inner)} "
                        "in a grouped view"
                    )
    return Locality.KEY_GROUPED


def key_locality(sql: str, key_names: Sequence[str], *, view: str) -> Locality:
    """How the view's SQL may be split for the Spark engine.

    Args:
        sql: The view's SQL over the relation `source`; empty means `SELECT * FROM source`.
        key_names: The view's entity join keys.
        view: The view's name, for the message.

    Raises:
        FailedPreconditionError: `VIEW_NOT_KEY_LOCAL`: the SQL is not split by key
            (the message names the construct), or does not parse.

    """
    body = sql.strip().rstrip(";")
    if not body:
        return Locality.ROW_LOCAL
    import sqlglot
    from sqlglot.errors import ParseError

    try:
        trees = [t for t in sqlglot.parse(body, read="duckdb") if t is not None]
    except ParseError as exc:
        construct = f"SQL the analysis cannot parse ({str(exc).splitlines()[0][:120]})"
        trees = []
        error: _NotKeyLocal | None = _NotKeyLocal(construct)
    else:
        error = None if len(trees) == 1 else _NotKeyLocal("more than one statement")
    try:
        if error is not None:
            raise error
        return _analyze(trees[0], key_names)
    except _NotKeyLocal as exc:
        raise FailedPreconditionError(
            f"feature view {view!r} cannot run on the Spark engine: its SQL has "
            f"{exc.construct}, so its rows do not depend on one entity key's source rows "
            "alone; rewrite it per key, or use offline.engine: duckdb",
            reason="VIEW_NOT_KEY_LOCAL",
            metadata={"feature_view": view, "construct": exc.construct},
        ) from None

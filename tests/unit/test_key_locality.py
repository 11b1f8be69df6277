"""Which view SQL the Spark engine can split by entity key (`skewless.registry.key_locality`)."""

from __future__ import annotations

import pytest

from skewless.core.errors import FailedPreconditionError
from skewless.registry.key_locality import Locality, key_locality

KEYS = ["driver_id"]


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "SELECT * FROM source",
        "SELECT *, conv_rate * 2 AS doubled FROM source WHERE trips > 3;",
        "SELECT driver_id AS driver_id, ts, CASE WHEN trips > 1 THEN 'a' END AS c FROM source",
        "WITH s AS (SELECT * FROM source WHERE trips > 0) SELECT * FROM s",
        "SELECT * FROM (SELECT * FROM source) AS inner_rows ORDER BY ts",
        "SELECT rider AS driver_id, ts FROM source",  # row-local: the key may be computed
    ],
)
def test_row_local_views(sql: str) -> None:
    assert key_locality(sql, KEYS, view="v") == Locality.ROW_LOCAL


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT *, lag(conv_rate) OVER (PARTITION BY driver_id ORDER BY ts) AS prev FROM source",
        "SELECT *, sum(trips) OVER (PARTITION BY driver_id, label ORDER BY ts) AS s FROM source",
        "SELECT driver_id, ts, sum(conv_rate) AS conv_rate FROM source GROUP BY driver_id, ts",
        "SELECT DISTINCT * FROM source",
        "SELECT * FROM source QUALIFY row_number() OVER (PARTITION BY driver_id ORDER BY ts) = 1",
    ],
)
def test_key_grouped_views(sql: str) -> None:
    assert key_locality(sql, KEYS, view="v") == Locality.KEY_GROUPED


def test_every_key_of_a_compound_entity_must_partition() -> None:
    sql = "SELECT *, lag(x) OVER (PARTITION BY a ORDER BY ts) AS p FROM source"
    assert key_locality(sql.replace("BY a", "BY b, a"), ["a", "b"], view="v") == (
        Locality.KEY_GROUPED
    )
    with pytest.raises(FailedPreconditionError, match="every entity key"):
        key_locality(sql, ["a", "b"], view="v")


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        (
            "SELECT *, lag(conv_rate) OVER (ORDER BY ts) AS p FROM source",
            "a window not partitioned",
        ),
        ("SELECT *, sum(x) OVER (PARTITION BY label) AS p FROM source", "a window not partitioned"),
        ("SELECT s.* FROM source AS s JOIN other AS o USING (driver_id)", "a JOIN"),
        ("SELECT * FROM source, other", "a JOIN"),
        ("SELECT * FROM other", "reading other"),
        ("SELECT * FROM read_parquet('x.parquet')", "reading READ_PARQUET"),
        ("SELECT * FROM source LIMIT 5", "LIMIT"),
        ("SELECT * FROM source USING SAMPLE 10%", "SAMPLE"),
        ("SELECT count(*) AS n FROM source", "an aggregate over the whole source"),
        ("SELECT label, count(*) AS n FROM source GROUP BY label", "GROUP BY without"),
        ("SELECT DISTINCT label FROM source", "DISTINCT without"),
        ("SELECT * FROM source UNION ALL SELECT * FROM source", "UNION"),
        ("SELECT * FROM source WHERE driver_id IN (SELECT driver_id FROM source)", "subquery"),
        ("SELECT *, (SELECT max(ts) FROM source) AS m FROM source", "subquery"),
        ("SELECT *, random() AS r FROM source", "non-deterministic"),
        ("SELECT *, now() AS r FROM source", "non-deterministic"),
        ("SELECT *, uuid() AS r FROM source", "non-deterministic"),
        (
            "SELECT trips AS driver_id, ts, lag(x) OVER (PARTITION BY driver_id) AS p FROM source",
            "the entity key 'driver_id' computed as trips",
        ),
        ("SELECT 1; SELECT 2", "more than one statement"),
        ("SELEC x FROM", "the analysis cannot parse"),
        ("SELEC x", "not one SELECT"),
    ],
)
def test_refusals_name_the_construct(sql: str, construct: str) -> None:
    with pytest.raises(FailedPreconditionError) as info:
        key_locality(sql, KEYS, view="driver_stats")
    assert info.value.reason == "VIEW_NOT_KEY_LOCAL"
    assert construct in info.value.message
    assert "'driver_stats'" in info.value.message
    assert info.value.metadata["feature_view"] == "driver_stats"
    assert construct in info.value.metadata["construct"]

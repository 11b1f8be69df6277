"""The offline engines every point-in-time exactness test runs on: DuckDB and Spark.

A test takes the `engine` fixture (tests/conftest.py) and joins through `Engine.join`;
the Spark engine uses the one local Spark session of the test run. Spark's per-job
overhead is far above DuckDB's, so property tests draw fewer examples on it
(`Engine.examples`): the same properties, a smaller sample.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skewless.core.config import SparkSettings
from skewless.offline.history_index import ViewHistory
from skewless.offline.point_in_time import point_in_time_join
from skewless.registry.feature_refs import FeaturePlan

ENGINES = ("duckdb", "spark")

#: A small local session: two cores, few shuffle partitions, no UI or progress bars.
SPARK_TEST_SETTINGS = SparkSettings(
    master="local[2]",
    conf=(
        ("spark.default.parallelism", "2"),
        ("spark.driver.memory", "1g"),
        ("spark.sql.shuffle.partitions", "2"),
        ("spark.ui.enabled", "false"),
        ("spark.ui.showConsoleProgress", "false"),
    ),
)
#: Only the DuckDB engine's tuning knobs (its answers do not depend on them).
_DUCKDB_ONLY = ("strategy", "history_memory_limit", "temp_directory", "threads", "memory_limit")


@dataclass(frozen=True)
class Engine:
    """One offline engine under test."""

    name: str
    session: Any = None

    def examples(self, duckdb_examples: int) -> int:
        """How many hypothesis examples a property draws on this engine."""
        return duckdb_examples if self.name == "duckdb" else max(4, duckdb_examples // 20)

    def join(
        self, entity_rows: Any, plan: FeaturePlan, histories: Sequence[ViewHistory], **kw: Any
    ) -> Any:
        """Starts the join on this engine (read `reader`, then `close` it)."""
        if self.name == "duckdb":
            return point_in_time_join(entity_rows, plan, histories, **kw)
        from skewless.offline.spark_join import spark_point_in_time_join

        for name in _DUCKDB_ONLY:
            kw.pop(name, None)
        # Staged as the server stages them (a local session reads a Parquet file).
        kw.setdefault("stage_dir", Path(tempfile.gettempdir()) / "skewless-test-spark-stage")
        return spark_point_in_time_join(
            self.session, entity_rows, plan, histories, target="local[2]", **kw
        )

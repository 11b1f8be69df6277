"""Times Feast's `get_historical_features(...).to_arrow()`; run by the Feast venv's Python.

Usage: run_historical.py REPO ENTITY_ROWS_PARQUET, REPO being a copy of
`bench/feast/historical` on which `feast apply` has run. Prints one JSON line: wall and
CPU seconds, rows, peak RSS and the per-feature checksum `bench/historical.py` compares.
"""

import json
import resource
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore

repo, entities_path = sys.argv[1], sys.argv[2]
store = FeatureStore(repo_path=repo)
features = [f"driver_stats:f{i}" for i in range(10)] + [f"customer_stats:f{i}" for i in range(5)]
entity_df = pq.read_table(entities_path).to_pandas()
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
cpu0 = time.process_time()
start = time.perf_counter()
table = store.get_historical_features(
    entity_df=entity_df, features=features, full_feature_names=True
).to_arrow()
wall = time.perf_counter() - start
cpu = time.process_time() - cpu0
checksum = {}
for name in [f.replace(":", "__") for f in features]:
    col = table[name]
    checksum[name] = round(float(pc.sum(pc.cast(col, pa.float64())).as_py() or 0.0), 3)
    checksum[name + ":nulls"] = col.null_count
print(
    json.dumps(
        {
            "wall_s": wall,
            "cpu_s": cpu,
            "rows": table.num_rows,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": rss0,
            "checksum": checksum,
        }
    )
)

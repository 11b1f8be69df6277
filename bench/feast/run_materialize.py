"""Times Feast's `FeatureStore.materialize`; run by the Feast venv's Python.

Usage: run_materialize.py REPO START END (ISO 8601), REPO being a copy of
`bench/feast/materialize` on which `feast apply` has run. Prints one JSON line: wall
and CPU seconds and peak RSS.
"""

import json
import resource
import sys
import time
from datetime import datetime

from feast import FeatureStore

repo, start, end = sys.argv[1], sys.argv[2], sys.argv[3]
store = FeatureStore(repo_path=repo)
t, cpu = time.perf_counter(), time.process_time()
store.materialize(datetime.fromisoformat(start), datetime.fromisoformat(end))
wall, cpu = time.perf_counter() - t, time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak}))

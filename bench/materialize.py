"""Materialization benchmark: skewless vs a raw pipelined-HSET ceiling on the same Redis.

Generates the issue's workload (`bench/workload.py`) into bench/.data/ (a driver view of
100,000 entities x 30 event times x 10 features and a customer view of 50,000 x 10 x 5
features with a string and a bool; `--scale` shrinks it), starts its own redis-server,
then measures in one run, each in a child process (for its peak RSS):

* ours: `skewless.materialization.pipeline.materialize` of the full range (history files +
  compare-and-set Redis writes);
* ours-online: the same views declared online-only (no history), which is what Feast's
  `materialize` does;
* ceiling: the latest row per key (DuckDB) written with pipelined HSETs from redis-py
  with hiredis, no skewless code, no compare-and-set, no history.

* feast (with `--feast`): `FeatureStore.materialize` of Feast 0.67 (file offline store
  over the same Parquet, Redis online store on the same server), run by the Python of a
  separate venv (`bench/.venv-feast`, made with
  `python -m venv bench/.venv-feast && bench/.venv-feast/bin/pip install "feast[redis]==0.67.0"`);
* parts (unless `--no-parts`): each part of ours timed alone, one after the other, so that
  each can be held against its own limit: DuckDB computing the window, sorted, into its
  snapshot table, the latest row per key, the scan of the snapshot for the history; the
  Parquet history write, its fsync and its commit; encoding the rows and the script calls
  (pyarrow); Redis running the pre-encoded compare-and-set calls sent on one raw pipeline
  (no Python between);
  `OnlineWriter.write`; and `redis-benchmark` pipelining plain HSETs of as many fields
  (Redis's own ceiling, no compare-and-set).

Every run reports its wall time and its CPU time: the process's (DuckDB's threads
included) and Redis's (from `INFO cpu`). The machine's cores may be shared: CPU time moves
much less with load from elsewhere than wall time; the load average and how busy the
machine's cores were during each run (all processes, from /proc/stat) are printed.

Usage:

    .venv/bin/python bench/materialize.py [--scale 1.0] [--repeat N] [--no-parts]
        [--feast [--feast-python PATH]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from workload import (
    MATERIALIZE_END,
    MATERIALIZE_START,
    copy_feast_repo,
    materialize_registry,
    materialize_views,
)

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"


def generate(scale: float) -> dict[str, int]:
    DATA.mkdir(parents=True, exist_ok=True)
    marker = DATA / "generated.json"
    if marker.exists() and json.loads(marker.read_text()).get("scale") != scale:
        marker.unlink()
    if marker.exists():
        sizes = json.loads(marker.read_text())
        return {k: sizes[k] for k in ("driver_rows", "customer_rows")}
    views = materialize_views(scale)
    for view, table in views.items():
        pq.write_table(table, DATA / f"{view}.parquet", row_group_size=1_000_000)
    sizes = {
        "driver_rows": views["driver_stats"].num_rows,
        "customer_rows": views["customer_profile"].num_rows,
    }
    marker.write_text(json.dumps({**sizes, "scale": scale}))
    return sizes


def cpu_s() -> float:
    """CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat (0, 0 elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def redis_cpu_s(client: object) -> float:
    """CPU seconds the Redis server has used so far."""
    info = client.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_ours(url: str, workdir: Path, *, offline: bool = True) -> dict[str, float]:
    from skewless.core.config import RepoConfig
    from skewless.materialization.pipeline import materialize

    config = RepoConfig(root=workdir, project="bench", data_dir=workdir / "data", redis_url=url)
    registry = materialize_registry(DATA, offline=offline)
    start, cpu = time.perf_counter(), cpu_s()
    result = materialize(config, registry, MATERIALIZE_START, MATERIALIZE_END)
    wall, cpu = time.perf_counter() - start, cpu_s() - cpu
    online = sum(v.online_rows_written for v in result.views)
    return {"wall_s": wall, "cpu_s": cpu, "rows": result.rows_read, "online_keys": online}


def run_parts(url: str, workdir: Path) -> dict[str, object]:
    """Each part of a materialization alone, in order; wall, our CPU and Redis's CPU each."""
    import redis

    from skewless.offline.window_query import WindowQuery

    if not hasattr(WindowQuery, "snapshot"):  # the code before the parts could be timed
        return {"parts": {}, "rows": 0, "online_keys": 0, "wall_s": 0.0, "cpu_s": 0.0}
    from skewless.core.config import RepoConfig
    from skewless.offline.offline_store import HistoryWriter, commit_window, discard
    from skewless.offline.window_query import open_window
    from skewless.online.layout import online_expiry
    from skewless.online.writer import CAS_SCRIPT, OnlineWriter, prepare_rows
    from skewless.online.writer import _packed_calls as packed_calls
    from skewless.registry.feature_refs import resolve_view

    config = RepoConfig(root=workdir, project="bench", data_dir=workdir / "data", redis_url=url)
    registry = materialize_registry(DATA)
    client = redis.Redis.from_url(url)
    writer = OnlineWriter.from_url(url)
    parts: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def timed(name: str) -> Iterator[None]:
        wall, cpu, rcpu = time.perf_counter(), cpu_s(), redis_cpu_s(client)
        yield
        part = parts.setdefault(name, [0.0, 0.0, 0.0])
        part[0] += time.perf_counter() - wall
        part[1] += cpu_s() - cpu
        part[2] += redis_cpu_s(client) - rcpu

    keys = 0
    for view in ("driver_stats", "customer_profile"):
        plan = resolve_view(registry, view)
        with open_window(config, registry, plan, MATERIALIZE_START, MATERIALIZE_END) as window:
            with timed("duckdb: the window, in (event time, key) order, into its snapshot"):
                latest = window.snapshot()
            with timed("duckdb: latest row per key"):
                batches = list(latest.batches(latest_only=True, batch_rows=50_000))
            with timed("duckdb: scan of the snapshot for the history"):
                ordered = list(window.batches(time_ordered=True))
            latest.close()
        with timed("history: Parquet encode and write (HistoryWriter.write)"):
            history = HistoryWriter(config, plan.name, plan.history_schema)
            for batch in ordered:
                history.write(batch)
        with timed("history: close and fsync the staged files"):
            staged = history.close()
        with timed("history: commit_window"):
            commit_window(config, plan.name, MATERIALIZE_START, MATERIALIZE_END, staged)
            discard(staged)
        expire = online_expiry(plan.view)
        sha = str(client.script_load(CAS_SCRIPT))
        with timed("online: encode rows and script calls (pyarrow)"):
            rows = [
                prepare_rows(
                    config.project, plan.name, b, join_keys=plan.key_names, features=plan.features
                )
                for b in batches
            ]
            commands = [c for r in rows for c in packed_calls(r, expire, sha)]
        client.flushall()
        with timed("online: Redis runs the compare-and-set calls (raw pipeline)"):
            conn = client.connection_pool.get_connection()
            for start in range(0, len(commands), 50):
                chunk = commands[start : start + 50]
                conn.send_packed_command(chunk, check_health=False)
                for _ in chunk:
                    conn.read_response()
            client.connection_pool.release(conn)
        client.flushall()
        with timed("online: OnlineWriter.write (encode, send, replies)"):
            for r in rows:
                writer.write(r, expire_after=expire)
        keys += sum(len(r) for r in rows)
        del ordered, batches
    writer.close()
    # Redis's own ceiling: plain pipelined HSETs of as many fields (no script), the
    # driver view's shape (12 fields of 9 bytes), as many keys as both views hold.
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    fields = [x for i in range(12) for x in (f"f{i}", "x" * 9)]
    client.flushall()
    wall, rcpu = time.perf_counter(), redis_cpu_s(client)
    subprocess.run(
        ["redis-benchmark", "-h", host, "-p", port, "-n", str(keys), "-r", str(keys),
         "-P", "50", "-c", "1", "-q", "HSET", "bench:__rand_int__", *fields],
        check=True, capture_output=True,
    )  # fmt: skip
    parts["redis-benchmark: plain HSET, same keys and fields"] = [
        time.perf_counter() - wall,
        0.0,
        redis_cpu_s(client) - rcpu,
    ]
    client.flushall()
    client.close()
    return {"parts": parts, "rows": 0, "online_keys": keys, "wall_s": 0.0, "cpu_s": 0.0}


def run_ceiling(url: str) -> dict[str, float]:
    import duckdb
    import redis

    client = redis.Redis.from_url(url)
    start, cpu = time.perf_counter(), cpu_s()
    rows = keys = 0
    for view, key in (("driver_stats", "driver_id"), ("customer_profile", "customer_id")):
        con = duckdb.connect()
        path = str(DATA / f"{view}.parquet")
        rows += con.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0]
        latest = con.sql(
            f"SELECT * FROM read_parquet('{path}') QUALIFY row_number() OVER "
            f"(PARTITION BY {key} ORDER BY event_ts DESC, created_ts DESC) = 1"
        )
        for batch in latest.to_arrow_reader(50_000):
            columns = batch.to_pydict()
            names = [n for n in columns if n not in (key, "event_ts", "created_ts")]
            for n in names:
                if pa.types.is_boolean(batch.schema.field(n).type):
                    columns[n] = [int(v) for v in columns[n]]
            pipe = client.pipeline(transaction=False)
            for i, ident in enumerate(columns[key]):
                mapping = {n: columns[n][i] for n in names}
                mapping["_ts"] = int(columns["event_ts"][i].timestamp() * 1_000_000)
                pipe.hset(f"raw:{view}:{{{ident}}}", mapping=mapping)
                if len(pipe) >= 5_000:
                    pipe.execute()
            pipe.execute()
            keys += batch.num_rows
        con.close()
    return {
        "wall_s": time.perf_counter() - start,
        "cpu_s": cpu_s() - cpu,
        "rows": rows,
        "online_keys": keys,
    }


def run_feast(python: str, url: str, rows: int) -> dict[str, float]:
    """A copy of bench/feast/materialize over the same files, `feast apply`, then timed."""
    import redis

    host_port = url.removeprefix("redis://").split("/")[0]
    repo = copy_feast_repo("materialize", DATA / "feast_repo", redis=host_port)
    for view in ("driver_stats", "customer_profile"):
        (repo / "data" / f"{view}.parquet").symlink_to(DATA / f"{view}.parquet")
    runner = HERE / "feast" / "run_materialize.py"
    start, end = MATERIALIZE_START.isoformat(), MATERIALIZE_END.isoformat()
    for args in (
        [str(Path(python).parent / "feast"), "apply"],
        [python, str(runner), str(repo), start, end],
    ):
        proc = subprocess.run(args, capture_output=True, text=True, cwd=repo)
        if proc.returncode:
            sys.exit(f"feast failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    client = redis.Redis.from_url(url)
    out["online_keys"] = client.dbsize()
    client.close()
    out["rows"] = rows
    return out


def child(mode: str, url: str, workdir: str) -> None:
    out: dict[str, object]
    if mode == "ceiling":
        out = run_ceiling(url)
    elif mode == "parts":
        out = run_parts(url, Path(workdir))
    else:
        out = run_ours(url, Path(workdir), offline=mode == "ours")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(mode: str, url: str) -> dict[str, object]:
    workdir = DATA / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--workdir", str(workdir)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        sys.exit(f"{mode} failed:\n{proc.stderr}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def print_parts(parts: dict[str, list[float]], repeat: int) -> None:
    """The parts (best of the repetitions, each part on its own) and their limits."""
    print(f"parts of ours, each alone (best of {repeat}; CPU: ours, then Redis's)")
    print(f"{'part':<64}{'wall s':>8}{'CPU s':>8}{'redis':>8}")
    for name, (wall, cpu, rcpu) in parts.items():
        print(f"{name:<64}{wall:>8.2f}{cpu:>8.2f}{rcpu:>8.2f}")

    def total(prefix: str, column: int) -> float:
        return sum(v[column] for k, v in parts.items() if k.startswith(prefix))

    snapshot = parts["duckdb: the window, in (event time, key) order, into its snapshot"]
    ordered = parts["duckdb: scan of the snapshot for the history"]
    latest = parts["duckdb: latest row per key"]
    history = [ordered[i] + total("history:", i) for i in range(3)]
    online = [
        latest[i]
        + parts["online: encode rows and script calls (pyarrow)"][i]
        + parts["online: Redis runs the compare-and-set calls (raw pipeline)"][i]
        for i in range(3)
    ]
    print(
        f"history half {history[0]:.2f} s wall ({history[1]:.2f} CPU), online half "
        f"{online[0]:.2f} s wall ({online[1]:.2f} CPU + {online[2]:.2f} Redis); after the "
        f"snapshot ({snapshot[0]:.2f} s) they overlap: lower bound "
        f"{snapshot[0] + max(history[0], online[0]):.2f} s wall, "
        f"{snapshot[1] + history[1] + online[1] + online[2]:.2f} s CPU in all"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--child", choices=["ours", "ours-online", "ceiling", "parts"])
    parser.add_argument("--url")
    parser.add_argument("--workdir")
    parser.add_argument("--feast", action="store_true", help="also run Feast 0.67")
    parser.add_argument("--no-parts", action="store_true", help="skip the per-part breakdown")
    parser.add_argument(
        "--modes", default="ceiling,ours,ours-online", help="runs besides feast, comma-separated"
    )
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--feast-python", default=str(HERE / ".venv-feast" / "bin" / "python"))
    args = parser.parse_args()
    # absolute, not resolved: the venv's python is a symlink; Feast runs in its repo's folder
    args.feast_python = str(Path(args.feast_python).absolute())
    if args.child:
        child(args.child, args.url, args.workdir)
        return
    import redis

    from skewless.online.embedded_redis import EmbeddedRedis

    sizes = generate(args.scale)
    load = os.getloadavg()[0]
    print(f"workload: {sizes}; load average at start {load:.2f} on {os.cpu_count()} cores")
    modes = args.modes.split(",") + (["feast"] if args.feast else [])
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    parts: dict[str, list[float]] = {}
    loads: list[float] = []
    with EmbeddedRedis(DATA / "redis", persist=False) as server:
        client = redis.Redis.from_url(server.url)
        for _ in range(args.repeat):  # interleaved, so that load from elsewhere hits all alike
            for mode in modes:
                client.flushall()
                loads.append(os.getloadavg()[0])
                before = redis_cpu_s(client)
                busy = machine_jiffies()
                if mode == "feast":
                    total = sizes["driver_rows"] + sizes["customer_rows"]
                    result: dict[str, float] = run_feast(args.feast_python, server.url, total)
                else:
                    result = run_child(mode, server.url)  # type: ignore[assignment]
                result["redis_cpu_s"] = redis_cpu_s(client) - before
                after = machine_jiffies()
                result["machine_busy"] = (after[0] - busy[0]) / max(after[1] - busy[1], 1)
                result["redis_used_mb"] = client.info("memory")["used_memory"] / 2**20
                runs[mode].append(result)
            if not args.no_parts:
                client.flushall()
                found = run_child("parts", server.url)["parts"]
                for name, values in found.items():  # type: ignore[attr-defined]
                    best = parts.get(name)
                    if best is None or values[0] < best[0]:
                        parts[name] = values
        client.close()
    # The fastest of the repetitions: the least disturbed by other work on the machine.
    results = {mode: min(rs, key=lambda r: r["wall_s"]) for mode, rs in runs.items()}
    print(
        f"best of {args.repeat} interleaved run(s); load average during the runs "
        f"{min(loads):.2f} to {max(loads):.2f}"
    )
    print(
        f"{'run':<12}{'wall s':>9}{'CPU s':>8}{'redis':>8}{'rows':>11}{'rows/s':>12}{'keys':>9}"
        f"{'RSS MB':>9}{'redis MB':>10}"
    )
    for mode, r in results.items():
        print(
            f"{mode:<12}{r['wall_s']:>9.2f}{r.get('cpu_s', float('nan')):>8.2f}"
            f"{r['redis_cpu_s']:>8.2f}{r['rows']:>11,}{r['rows'] / r['wall_s']:>12,.0f}"
            f"{r['online_keys']:>9,}{r['peak_rss_mb']:>9.0f}{r['redis_used_mb']:>10.1f}"
        )
    for mode, rs in runs.items():
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in rs)
        cpus = ", ".join(f"{r.get('cpu_s', float('nan')):.2f}+{r['redis_cpu_s']:.2f}" for r in rs)
        busy = ", ".join(f"{r['machine_busy']:.0%}" for r in rs)
        print(f"  {mode:<12} every run: wall {walls}; CPU (+Redis) {cpus}; machine busy {busy}")

    def cpu(mode: str) -> float:
        return results[mode].get("cpu_s", float("nan")) + results[mode]["redis_cpu_s"]

    if {"ours", "ours-online", "ceiling"} <= results.keys():
        ratio = results["ours"]["wall_s"] / results["ceiling"]["wall_s"]
        cpu_ratio = cpu("ours") / cpu("ceiling")
        print(f"ours / ceiling wall time: {ratio:.2f}x (target <= 2x); CPU time {cpu_ratio:.2f}x")
        online_ratio = results["ours-online"]["wall_s"] / results["ceiling"]["wall_s"]
        print(f"ours-online (no history) / ceiling wall time: {online_ratio:.2f}x")
    if {"feast", "ours", "ours-online"} <= results.keys():
        speedup = results["feast"]["wall_s"] / results["ours"]["wall_s"]
        online_speedup = results["feast"]["wall_s"] / results["ours-online"]["wall_s"]
        print(
            f"feast / ours wall time: {speedup:.1f}x with history, {online_speedup:.1f}x "
            "online only like feast (target >= 10x)"
        )
        print(
            f"feast / ours CPU time (with Redis's): {cpu('feast') / cpu('ours'):.1f}x with "
            f"history, {cpu('feast') / cpu('ours-online'):.1f}x online only"
        )
    else:
        print("Feast: not run (pass --feast)")
    if parts:
        print_parts(parts, args.repeat)


if __name__ == "__main__":
    main()

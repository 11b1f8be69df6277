"""Quickstart: the Python client against the served example repository.

Run `make run` in one terminal, then `.venv/bin/python examples/quickstart.py` in another
(`--target HOST:PORT` if the server is elsewhere). Prints what it found as JSON.
"""

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq

from skewless.client import Client, NotFoundError

parser = argparse.ArgumentParser()
parser.add_argument("--target", default="127.0.0.1:6566")
parser.add_argument("--orders", default=str(Path(__file__).parent / "rides/data/orders.parquet"))
args = parser.parse_args()

with Client(args.target) as client:
    # Discover before building: which features mention trips?
    found = [m.reference for m in client.search_features("trips")]

    # Online: the latest values for two drivers and two customers (one of each unknown).
    online = client.get_online_features(
        {"driver_id": [1001, 9999], "customer_id": [2001, 8888]},
        feature_service="driver_ranking",
    )
    columns = online.to_dict()  # feature name -> one value per entity row
    statuses = online.statuses()  # PRESENT, NULL_VALUE, NOT_FOUND or OUTSIDE_MAX_AGE
    event_times = online.event_times()  # when each value became true (None: no row)

    # Training data: every order joined to its features as they were at order time.
    orders = pq.read_table(args.orders)
    training = client.get_historical_features(orders, feature_service="driver_ranking")

    # Errors are typed and carry the server's details.
    try:
        client.get_online_features({"driver_id": [1001]}, features=["driver_stats:no_such"])
    except NotFoundError as err:
        error = {"code": err.code.name, "reason": err.reason, "message": err.message}

print(
    json.dumps(
        {
            "search": found,
            "online": {"values": columns, "statuses": statuses, "event_times": event_times},
            "training": {"rows": training.num_rows, "columns": training.column_names},
            "error": error,
        },
        indent=2,
        default=str,
    )
)

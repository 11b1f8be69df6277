"""The online lookup form: entity rows in, values, statuses and event times out.

It calls `GetOnlineFeatures` exactly as a production service would.

The form is a GET, so a lookup is a link that can be shared and works without JavaScript.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from skewless.client.errors import SkewlessClientError
from skewless.console.api import Api
from skewless.console.entity_rows import EntityRows, EntityRowsError, parse_entity_rows
from skewless.console.web import api, http_status, render, settle
from skewless.v1 import online_service_pb2, registry_pb2, types_pb2

__all__ = ["LookupRow", "routes"]

_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class LookupRow:
    """One (entity row, feature) of the result table."""

    row: int
    keys: list[str]
    feature: str
    value: types_pb2.Value
    status: int
    event_time: object


async def _join_keys(
    caller: Api, feature_service: str, features: list[str]
) -> list[registry_pb2.JoinKey]:
    """The join keys the lookup needs, from the registry; [] when they cannot be known."""
    try:
        if feature_service:
            service = await caller.feature_service(feature_service)
            view_names = [p.feature_view for p in service.projections]
        else:
            view_names = [ref.split(":", 1)[0] for ref in features]
        view_names = list(dict.fromkeys(view_names))
        views = await asyncio.gather(*(caller.feature_view(v) for v in view_names))
        entity_names = list(dict.fromkeys(e for v in views for e in v.entities))
        entities = await asyncio.gather(*(caller.entity(e) for e in entity_names))
    except SkewlessClientError:  # the lookup itself reports what is wrong
        return []
    keys: dict[str, registry_pb2.JoinKey] = {}
    for entity in entities:
        for key in entity.join_keys:
            keys.setdefault(key.name, key)
    return list(keys.values())


def _results(
    rows: EntityRows, response: online_service_pb2.GetOnlineFeaturesResponse
) -> list[LookupRow]:
    out: list[LookupRow] = []
    for i, cells in enumerate(rows.rows):
        for vector in response.results:
            out.append(
                LookupRow(
                    row=i + 1,
                    keys=cells,
                    feature=vector.name,
                    value=vector.values[i],
                    status=vector.statuses[i],
                    event_time=vector.event_times[i] if i < len(vector.event_times) else None,
                )
            )
    return out


async def lookup(request: Request) -> Response:
    """Shows the form; with rows submitted, looks them up and shows the results."""
    params = request.query_params
    feature_service = params.get("feature_service", "").strip()
    features = [f for f in _SEPARATORS.split(params.get("features", "")) if f]
    text = params.get("rows", "")
    full_names = params.get("full_feature_names") == "on"
    caller = api(request)
    services = await settle(caller.feature_services())
    join_keys = (
        await _join_keys(caller, feature_service, features) if feature_service or features else []
    )
    context: dict[str, object] = {
        "services": services,
        "feature_service": feature_service,
        "features": " ".join(features),
        "rows_text": text or (",".join(k.name for k in join_keys) + "\n" if join_keys else ""),
        "full_feature_names": full_names,
        "join_keys": join_keys,
        "results": None,
        "keys": [],
    }
    if "rows" not in params:
        return render(request, "lookup.html", context)
    status = 200
    try:
        if bool(feature_service) == bool(features):
            raise EntityRowsError("choose a feature service or enter features (one of the two)")
        rows = parse_entity_rows(text, {k.name: k.value_type for k in join_keys})
        online_request = online_service_pb2.GetOnlineFeaturesRequest(full_feature_names=full_names)
        if feature_service:
            online_request.feature_service = feature_service
        else:
            online_request.features.features.extend(features)
        for key, values in rows.columns.items():
            online_request.entities[key].values.extend(values)
        response = await caller.online_features(online_request)
        context.update(results=_results(rows, response), keys=rows.keys)
    except EntityRowsError as exc:
        context["form_error"] = str(exc)
        status = 400
    except SkewlessClientError as exc:
        if exc.code == grpc.StatusCode.UNAUTHENTICATED:
            raise  # the sign-in form, in place of the page
        context["error"] = exc
        status = http_status(exc.code)
    return render(request, "lookup.html", context, status_code=status)


routes = [Route("/lookup", lookup, name="lookup")]

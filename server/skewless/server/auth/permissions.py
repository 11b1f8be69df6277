"""Permissions: the repository's policies decide what each authenticated subject may do.

Deny by default: once `auth.mode` is not `none`, a call is allowed only when a policy
grants its action, to the caller's subject or one of its groups, on every resource it
touches. The policies are part of the registry (`Registry.policies`), so they are
applied, versioned and reloaded with the definitions.

What each RPC needs (`METHOD_RULES`; a method without a rule is refused):

- `GetOnlineFeatures` / `GetHistoricalFeatures`: `read_online` / `read_historical` on
  the feature service asked for, or on every feature view of a feature list; entity
  rows read by the server (`path`, `sql`) need `server_entity_rows` on the project too,
  and a feature service's log as entity rows needs `read_historical` on that service;
- `GetSkewReport`: `read_historical` on the feature service (the report shows served and
  offline values);
- `PushFeatures`: `push` on the feature view named, or on every view the push source
  feeds; `StartMaterialization`: `materialize` on every view it runs;
- every `RegistryService` RPC, reading materialization jobs and a view's freshness:
  `read_registry`;
- health is open; reflection needs a valid credential unless `auth.open_reflection`.

A grant on the project covers everything in it; `admin` covers every action. A refusal
is PERMISSION_DENIED naming the action and the one resource the caller named (never
another resource's name), and it is written once to the audit log and counted.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from skewless.core.errors import PermissionDeniedError, quoted, shown
from skewless.server.auth import audit
from skewless.server.auth.principal import CallAuth, Principal, current_call
from skewless.v1 import policy_pb2, registry_pb2

__all__ = [
    "METHOD_RULES",
    "Access",
    "Action",
    "MethodRule",
    "PolicySet",
    "Resource",
    "rule_for",
]

_log = logging.getLogger(__name__)
_pb = policy_pb2
_DECISION_CACHE_SIZE = 65_536


class Action(enum.Enum):
    """An action a policy grants (the YAML names)."""

    READ_ONLINE = "read_online"
    READ_HISTORICAL = "read_historical"
    PUSH = "push"
    MATERIALIZE = "materialize"
    READ_REGISTRY = "read_registry"
    SERVER_ENTITY_ROWS = "server_entity_rows"
    ADMIN = "admin"


#: Each action's value in `skewless.v1.PolicyAction`.
ACTION_VALUES: dict[Action, int] = {
    Action.READ_ONLINE: _pb.POLICY_ACTION_READ_ONLINE,
    Action.READ_HISTORICAL: _pb.POLICY_ACTION_READ_HISTORICAL,
    Action.PUSH: _pb.POLICY_ACTION_PUSH,
    Action.MATERIALIZE: _pb.POLICY_ACTION_MATERIALIZE,
    Action.READ_REGISTRY: _pb.POLICY_ACTION_READ_REGISTRY,
    Action.SERVER_ENTITY_ROWS: _pb.POLICY_ACTION_SERVER_ENTITY_ROWS,
    Action.ADMIN: _pb.POLICY_ACTION_ADMIN,
}
_ACTIONS_BY_VALUE = {value: action for action, value in ACTION_VALUES.items()}

_KIND_LABELS = {
    "project": "the project",
    "feature_view": "feature view",
    "feature_service": "feature service",
    "push_source": "the feature views of push source",
}


@dataclass(frozen=True)
class Resource:
    """What a call touches: the project, a feature view or a feature service.

    `push_source` resources are checked as the views the source feeds but are named
    by the source, the name the caller gave.
    """

    kind: str
    name: str = ""

    @staticmethod
    def project() -> Resource:
        """The project (and everything in it)."""
        return Resource("project")

    @staticmethod
    def view(name: str) -> Resource:
        """A feature view."""
        return Resource("feature_view", name)

    @staticmethod
    def service(name: str) -> Resource:
        """A feature service."""
        return Resource("feature_service", name)

    def label(self) -> str:
        """How a refusal names it."""
        if self.kind == "project":
            return _KIND_LABELS["project"]
        return f"{_KIND_LABELS[self.kind]} {quoted(self.name, 64)}"

    def key(self) -> str:
        """Its metadata form (`feature_view:driver_stats`)."""
        return self.kind if self.kind == "project" else f"{self.kind}:{shown(self.name, 64)}"


@dataclass(frozen=True)
class _Grant:
    subjects: frozenset[str]
    groups: frozenset[str]
    actions: frozenset[Action]
    project: bool
    views: tuple[str, ...]
    services: tuple[str, ...]

    def covers(self, principal: Principal, action: Action, resource: Resource) -> bool:
        if action not in self.actions and Action.ADMIN not in self.actions:
            return False
        if principal.subject not in self.subjects and not (principal.groups & self.groups):
            return False
        if self.project:
            return True
        if resource.kind == "feature_view":
            return any(fnmatch.fnmatchcase(resource.name, p) for p in self.views)
        if resource.kind == "feature_service":
            return any(fnmatch.fnmatchcase(resource.name, p) for p in self.services)
        return False  # the project itself needs a grant on the project


def _grant(policy: policy_pb2.Policy) -> _Grant:
    patterns = policy.resources
    return _Grant(
        subjects=frozenset(policy.subjects),
        groups=frozenset(policy.groups),
        actions=frozenset(_ACTIONS_BY_VALUE[a] for a in policy.actions if a in _ACTIONS_BY_VALUE),
        project=any(r.type == _pb.RESOURCE_TYPE_PROJECT for r in patterns),
        views=tuple(r.name_pattern for r in patterns if r.type == _pb.RESOURCE_TYPE_FEATURE_VIEW),
        services=tuple(
            r.name_pattern for r in patterns if r.type == _pb.RESOURCE_TYPE_FEATURE_SERVICE
        ),
    )


class PolicySet:
    """The compiled policies of one registry version, with a bounded decision cache."""

    def __init__(self, policies: Iterable[policy_pb2.Policy] = ()) -> None:
        """Compiles policies (none: everything is denied)."""
        self._grants = tuple(_grant(p) for p in policies)
        self._decisions: dict[tuple[str, frozenset[str], Action, Resource], bool] = {}

    def allows(self, principal: Principal, action: Action, resource: Resource) -> bool:
        """Whether some policy grants `action` on `resource` to the principal."""
        key = (principal.subject, principal.groups, action, resource)
        decision = self._decisions.get(key)
        if decision is None:
            decision = any(g.covers(principal, action, resource) for g in self._grants)
            if len(self._decisions) >= _DECISION_CACHE_SIZE:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision


class Access:
    """The permission check every servicer calls; a no-op while auth is off."""

    def __init__(self, *, enabled: bool) -> None:
        """Creates the check; `load` it with every registry version."""
        self.enabled = enabled
        self.policies = PolicySet()

    def load(self, registry: registry_pb2.Registry) -> None:
        """Compiles the policies of a registry version (a `RegistryHolder` listener)."""
        self.policies = PolicySet(registry.policies)

    def require(
        self, action: Action, resources: Iterable[Resource], *, named: Resource | None = None
    ) -> None:
        """Refuses the current call unless its principal may do `action` on each resource.

        Args:
            action: The action.
            resources: Everything the call touches.
            named: How a refusal names what was denied, when the resources are not
                names the caller gave (a push source's views); default: the resource.

        Raises:
            PermissionDeniedError: A resource is not granted (audited and counted).

        """
        if not self.enabled:
            return
        call = current_call()
        if call is None:  # auth is on but the call was not authenticated: a wiring bug
            _log.error("a permission check ran outside an authenticated call")
            raise _denied(action, named or Resource.project())
        call.checked = True
        policies = self.policies
        for resource in resources:
            if not policies.allows(call.principal, action, resource):
                shown_as = named or resource
                audit.denied(call, action.value, shown_as.key())
                raise _denied(action, shown_as)


def _denied(action: Action, resource: Resource) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"permission denied: {action.value} on {resource.label()}; ask the project's "
        "owners for a policy that grants it",
        reason="PERMISSION_DENIED",
        metadata={"action": action.value, "resource": resource.key()},
    )


def check_static(
    call: CallAuth, policies: PolicySet, action: Action
) -> PermissionDeniedError | None:
    """The refusal of a project-level rule (`read_registry`), or None when allowed."""
    call.checked = True
    if policies.allows(call.principal, action, Resource.project()):
        return None
    audit.denied(call, action.value, Resource.project().key())
    return _denied(action, Resource.project())


@dataclass(frozen=True)
class MethodRule:
    """What a method needs beyond an authenticated caller.

    Attributes:
        open: No credentials needed at all (health; reflection if configured).
        action: A project-level action checked before the handler runs; None when
            the servicer checks its own resources (or nothing beyond authentication).
        in_servicer: The servicer checks the resources of each request itself.

    """

    open: bool = False
    action: Action | None = None
    in_servicer: bool = False


_REGISTRY = MethodRule(action=Action.READ_REGISTRY)
# Planning writes nothing, but it checks the files' source paths and runs their SQL
# against the server's data: the same privilege as applying them.
_ADMIN = MethodRule(action=Action.ADMIN)
_SERVICER = MethodRule(in_servicer=True)
_OPEN = MethodRule(open=True)
_AUTHENTICATED = MethodRule()

#: Every method the server serves, by service, and what it needs.
METHOD_RULES: dict[str, dict[str, MethodRule]] = {
    "skewless.v1.OnlineService": {"GetOnlineFeatures": _SERVICER, "PushFeatures": _SERVICER},
    "skewless.v1.HistoricalService": {"GetHistoricalFeatures": _SERVICER},
    "skewless.v1.MonitoringService": {"GetSkewReport": _SERVICER},
    "skewless.v1.MaterializationService": {
        "StartMaterialization": _SERVICER,
        "GetMaterializationJob": _REGISTRY,
        "ListMaterializationJobs": _REGISTRY,
        "GetFeatureViewFreshness": _REGISTRY,
    },
    # Listed one by one: a new registry RPC (a write, say) is refused until it has a rule.
    "skewless.v1.RegistryService": {
        name: _REGISTRY
        for name in (
            "GetRegistryInfo",
            "GetEntity",
            "ListEntities",
            "GetDataSource",
            "ListDataSources",
            "GetFeatureView",
            "ListFeatureViews",
            "GetFeatureService",
            "ListFeatureServices",
            "SearchFeatures",
        )
    },
    "grpc.health.v1.Health": {"*": _OPEN},
}
METHOD_RULES["skewless.v1.RegistryService"]["PlanRepository"] = _ADMIN
_REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


def rule_for(method: str, *, open_reflection: bool) -> MethodRule | None:
    """The rule of a full method name (`/pkg.Service/Method`); None: no rule, refuse."""
    service, _, name = method.lstrip("/").partition("/")
    if service in _REFLECTION_SERVICES:
        return _OPEN if open_reflection else _AUTHENTICATED
    rules = METHOD_RULES.get(service)
    if rules is None:
        return None
    return rules.get(name) or rules.get("*")

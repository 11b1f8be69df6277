"""Policies: who may do what, defined in the repository and applied with the registry.

```yaml
# features/policies.yaml (any definition file may hold a `policies` list)
policies:
  - name: checkout_serving
    description: the checkout service reads its features online
    subjects: [checkout-service]          # authenticated subjects (exact)
    groups: [serving]                     # or groups (exact)
    actions: [read_online]
    resources: [feature_service:checkout_*, feature_view:driver_stats]
  - name: platform_admins
    groups: [feature-platform]
    actions: [admin]
    resources: [project]
```

Actions: `read_online`, `read_historical`, `push`, `materialize`, `read_registry`,
`server_entity_rows` (historical entity rows read by the server from a `path` or
`sql`), `admin` (every action). Resources: `project` (everything in it),
`feature_view:<name or glob>`, `feature_service:<name or glob>`; globs are shell-style
(`*`, `?`, `[...]`), case-sensitive. Policies only matter once the server
authenticates callers (`auth.mode` in `skewless.yaml`); then everything not granted
is denied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from skewless.core.errors import DefinitionError
from skewless.core.names import is_identifier
from skewless.v1 import policy_pb2

__all__ = ["POLICY_ACTIONS", "RESOURCE_KINDS", "Policy", "policy_problems"]

_pb = policy_pb2

#: The action names of a policy, with their `skewless.v1.PolicyAction` values.
POLICY_ACTIONS: dict[str, policy_pb2.PolicyAction.ValueType] = {
    "read_online": _pb.POLICY_ACTION_READ_ONLINE,
    "read_historical": _pb.POLICY_ACTION_READ_HISTORICAL,
    "push": _pb.POLICY_ACTION_PUSH,
    "materialize": _pb.POLICY_ACTION_MATERIALIZE,
    "read_registry": _pb.POLICY_ACTION_READ_REGISTRY,
    "server_entity_rows": _pb.POLICY_ACTION_SERVER_ENTITY_ROWS,
    "admin": _pb.POLICY_ACTION_ADMIN,
}
#: The resource kinds a pattern may name (`kind:pattern`), with their `ResourceType`.
RESOURCE_KINDS: dict[str, policy_pb2.ResourceType.ValueType] = {
    "feature_view": _pb.RESOURCE_TYPE_FEATURE_VIEW,
    "feature_service": _pb.RESOURCE_TYPE_FEATURE_SERVICE,
}
_PATTERN = re.compile(r"[A-Za-z0-9_*?\[\]!-]{1,128}")
_MAX_PRINCIPAL = 256


@dataclass(frozen=True)
class Policy:
    """A grant of actions on resources to subjects and groups.

    Attributes:
        name: Unique identifier within the project.
        actions: Action names (`read_online`, ..., `admin`).
        resources: `project`, `feature_view:<glob>` or `feature_service:<glob>`.
        subjects: Authenticated subjects granted (exact match).
        groups: Groups granted (exact match).
        description: Why the grant exists.
        origin: The definition file this came from (for messages); not part of equality.

    """

    name: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    subjects: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    description: str = ""
    origin: str = field(default="", compare=False)

    def to_proto(self) -> policy_pb2.Policy:
        """Returns the registry message.

        Raises:
            DefinitionError: An action or resource is not valid (see `policy_problems`).

        """
        problems = policy_problems((self,))
        if problems:
            raise DefinitionError(
                f"{problems[0][0]}: {problems[0][1]}", reason="INVALID_DEFINITION"
            )
        resources = []
        for resource in self.resources:
            if resource == "project":
                resources.append(_pb.ResourcePattern(type=_pb.RESOURCE_TYPE_PROJECT))
            else:
                kind, _, pattern = resource.partition(":")
                resources.append(
                    _pb.ResourcePattern(type=RESOURCE_KINDS[kind], name_pattern=pattern)
                )
        return _pb.Policy(
            name=self.name,
            description=self.description,
            subjects=sorted(set(self.subjects)),
            groups=sorted(set(self.groups)),
            actions=sorted({POLICY_ACTIONS[a] for a in self.actions}),
            resources=resources,
        )


def _resource_problem(resource: str) -> str | None:
    if resource == "project":
        return None
    kind, sep, pattern = resource.partition(":")
    if not sep or kind not in RESOURCE_KINDS:
        return (
            f"resource {resource!r} is not 'project', 'feature_view:<name or glob>' or "
            "'feature_service:<name or glob>'"
        )
    if not _PATTERN.fullmatch(pattern):
        return (
            f"resource {resource!r}: the name must be an identifier or a glob of "
            "letters, digits, _, -, *, ?, [...] (at most 128 characters)"
        )
    return None


def policy_problems(policies: tuple[Policy, ...]) -> list[tuple[str, str]]:
    """Every problem of a set of policies, as (object, message) pairs."""
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for policy in policies:
        obj = f"policy {policy.name!r}"
        if not is_identifier(policy.name):
            problems.append((obj, "the name must be an identifier (lower_snake_case)"))
        if policy.name in seen:
            problems.append((obj, "another policy has the same name"))
        seen.add(policy.name)
        if not policy.subjects and not policy.groups:
            problems.append((obj, "grants nobody: list subjects or groups"))
        for who in (*policy.subjects, *policy.groups):
            if not who or len(who) > _MAX_PRINCIPAL or who != who.strip():
                problems.append((obj, f"subject or group {who!r} must be a non-empty name"))
        if not policy.actions:
            problems.append((obj, f"grants no action: list some of {', '.join(POLICY_ACTIONS)}"))
        for action in policy.actions:
            if action not in POLICY_ACTIONS:
                problems.append(
                    (obj, f"unknown action {action!r}; use {', '.join(POLICY_ACTIONS)}")
                )
        if not policy.resources:
            problems.append((obj, "grants on no resource: list 'project' or views or services"))
        for resource in policy.resources:
            problem = _resource_problem(resource)
            if problem is not None:
                problems.append((obj, problem))
    return problems

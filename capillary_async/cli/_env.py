"""Target and credentials from options and the environment; values are never printed."""

from __future__ import annotations

from collections.abc import Mapping

from .. import Auth, Cluster, resolve_base_url
from .. import credentials_from_env as library_credentials

__all__ = ["UsageError", "credentials_from_env", "target_from"]


class UsageError(Exception):
    """A usage or configuration mistake: exit status 2, nothing sent."""


def target_from(base_url: str | None, cluster: str | None, env: Mapping[str, str]) -> str:
    """The base URL from --base-url / --cluster, else CAPILLARY_BASE_URL / CAPILLARY_CLUSTER."""
    if base_url and cluster:
        raise UsageError("give --base-url or --cluster, not both")
    source = "--base-url" if base_url else "CAPILLARY_BASE_URL"
    base_url = base_url or (None if cluster else env.get("CAPILLARY_BASE_URL"))
    cluster = cluster or (None if base_url else env.get("CAPILLARY_CLUSTER"))
    try:
        if base_url:
            return resolve_base_url(base_url)
        if cluster:
            return Cluster.from_name(cluster).base_url
    except ValueError as exc:
        # Named, not quoted: a URL may carry a user and password before its host.
        text = str(exc)
        if base_url:
            text = text.removeprefix("base_url: ").replace(repr(base_url), f"the URL in {source}")
        raise UsageError(text) from None
    raise UsageError(
        "no target: pass --base-url or --cluster, or set CAPILLARY_BASE_URL or CAPILLARY_CLUSTER"
    )


def credentials_from_env(env: Mapping[str, str]) -> Auth:
    """Exactly one complete set of credentials, or a ``UsageError`` naming what is missing."""
    try:
        return library_credentials(env)
    except ValueError as exc:  # names variables, never values
        raise UsageError(str(exc)) from None

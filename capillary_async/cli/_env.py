"""Target and credentials from options and the environment; values are never printed."""

from __future__ import annotations

from collections.abc import Mapping

from .. import Auth, base_url_from_env
from .. import credentials_from_env as library_credentials

__all__ = ["UsageError", "credentials_from_env", "target_from"]


class UsageError(Exception):
    """A usage or configuration mistake: exit status 2, nothing sent."""


def target_from(base_url: str | None, cluster: str | None, env: Mapping[str, str]) -> str:
    """The base URL from --base-url / --cluster, else CAPILLARY_BASE_URL / CAPILLARY_CLUSTER."""
    if base_url and cluster:
        raise UsageError("give --base-url or --cluster, not both")
    # The library's rules and words, which name the setting and never quote its value.
    if base_url:
        given, where = {"CAPILLARY_BASE_URL": base_url}, "--base-url"
    elif cluster:
        given, where = {"CAPILLARY_CLUSTER": cluster}, "--cluster"
    else:
        given, where = dict(env), ""
    try:
        return base_url_from_env(given)
    except ValueError as exc:
        text = str(exc)
        if not text.startswith("no target"):
            raise UsageError(where + text.split(":", 1)[1] if where else text) from None
    raise UsageError(
        "no target: pass --base-url or --cluster, or set CAPILLARY_BASE_URL or CAPILLARY_CLUSTER"
    )


def credentials_from_env(env: Mapping[str, str]) -> Auth:
    """Exactly one complete set of credentials, or a ``UsageError`` naming what is missing."""
    try:
        return library_credentials(env)
    except ValueError as exc:  # names variables, never values
        raise UsageError(str(exc)) from None

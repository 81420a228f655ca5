"""Target and credentials from options and the environment; values are never printed."""

from __future__ import annotations

from collections.abc import Mapping

from .. import Auth, BasicAuth, BearerToken, Cluster, OAuthCredentials, resolve_base_url

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
    present = {name for name, value in env.items() if name.startswith("CAPILLARY_") and value}
    modes: list[str] = []
    if "CAPILLARY_TOKEN" in present:
        modes.append("CAPILLARY_TOKEN")
    oauth = {"CAPILLARY_CLIENT_KEY", "CAPILLARY_CLIENT_SECRET"} & present
    if oauth:
        modes.append("CAPILLARY_CLIENT_KEY/CAPILLARY_CLIENT_SECRET")
        for name in ("CAPILLARY_CLIENT_KEY", "CAPILLARY_CLIENT_SECRET"):
            if name not in present:
                raise UsageError(f"{name} is not set (OAuth needs both key and secret)")
    basic = {"CAPILLARY_USERNAME", "CAPILLARY_PASSWORD", "CAPILLARY_PASSWORD_MD5"} & present
    if basic:
        modes.append("CAPILLARY_USERNAME/CAPILLARY_PASSWORD")
        if "CAPILLARY_USERNAME" not in present:
            raise UsageError("CAPILLARY_USERNAME is not set (Basic auth needs it with a password)")
        passwords = {"CAPILLARY_PASSWORD", "CAPILLARY_PASSWORD_MD5"} & present
        if not passwords:
            raise UsageError(
                "CAPILLARY_PASSWORD is not set (or CAPILLARY_PASSWORD_MD5, the password's MD5)"
            )
        if len(passwords) == 2:
            raise UsageError("set CAPILLARY_PASSWORD or CAPILLARY_PASSWORD_MD5, not both")
    if not modes:
        raise UsageError(
            "no credentials: set CAPILLARY_USERNAME with CAPILLARY_PASSWORD (or "
            "CAPILLARY_PASSWORD_MD5), or CAPILLARY_CLIENT_KEY with CAPILLARY_CLIENT_SECRET, "
            "or CAPILLARY_TOKEN"
        )
    if len(modes) > 1:
        raise UsageError(f"more than one kind of credentials is set: {', '.join(modes)}; keep one")
    try:
        if modes[0] == "CAPILLARY_TOKEN":
            return BearerToken(env["CAPILLARY_TOKEN"])
        if oauth:
            return OAuthCredentials(env["CAPILLARY_CLIENT_KEY"], env["CAPILLARY_CLIENT_SECRET"])
        if "CAPILLARY_PASSWORD_MD5" in present:
            return BasicAuth.from_md5(env["CAPILLARY_USERNAME"], env["CAPILLARY_PASSWORD_MD5"])
        return BasicAuth(env["CAPILLARY_USERNAME"], env["CAPILLARY_PASSWORD"])
    except ValueError as exc:  # the messages name the variable's role, never its value
        raise UsageError(f"credentials: {exc}") from None

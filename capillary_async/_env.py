"""Target and credentials from ``CAPILLARY_*`` variables, as the command line reads them.

Values are never quoted in an error: only the variables' names are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ._auth import Auth, BasicAuth, BearerToken, OAuthCredentials
from ._config import Cluster, resolve_base_url

__all__ = ["base_url_from_env", "credentials_from_env", "url_problem"]


#: What ``resolve_base_url`` can object to, as fixed words: its own text may quote the value.
_URL_REASONS = (
    ("user name or password", "must not carry a user name or password; pass them as auth="),
    ("query or fragment", "must not carry a query or fragment"),
    (
        "plain http",
        "is plain http to a non-loopback host, which would send credentials in clear text",
    ),
    ("bad host or port", "is not a URL (bad host or port)"),
)


def url_problem(exc: ValueError) -> str:
    """Why a base URL was refused, in fixed words that never quote the URL."""
    text = str(exc)
    for mark, reason in _URL_REASONS:
        if mark in text:
            return reason
    return "is not an https:// URL with a host"


def _value(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value without the whitespace a .env file leaves (CRLF); blank is unset."""
    return (env.get(name) or "").strip() or None


def base_url_from_env(env: Mapping[str, str] | None = None, *, allow_insecure: bool = False) -> str:
    """``CAPILLARY_BASE_URL``, else ``CAPILLARY_CLUSTER`` (a ``Cluster`` name), checked.

    As on the command line, ``CAPILLARY_BASE_URL`` wins when both are set. Raises
    ``ValueError`` naming the variable, never quoting its value, when neither is
    set or the value will not do (plain ``http://`` only for loopback, or with
    ``allow_insecure=True``, as for the client).
    """
    env = os.environ if env is None else env
    base_url = _value(env, "CAPILLARY_BASE_URL")
    if base_url:
        try:
            return resolve_base_url(base_url, allow_insecure=allow_insecure is True)
        except ValueError as exc:
            raise ValueError(f"CAPILLARY_BASE_URL: {url_problem(exc)}") from None
    cluster = _value(env, "CAPILLARY_CLUSTER")
    if cluster:
        try:
            return Cluster.from_name(cluster).base_url
        except ValueError:
            names = ", ".join(member.name for member in Cluster)
            raise ValueError(f"CAPILLARY_CLUSTER: unknown cluster (one of {names})") from None
    raise ValueError("no target: set CAPILLARY_BASE_URL or CAPILLARY_CLUSTER")


def credentials_from_env(env: Mapping[str, str] | None = None) -> Auth:
    """Exactly one complete set of credentials from the environment.

    ``CAPILLARY_USERNAME`` with ``CAPILLARY_PASSWORD`` or ``CAPILLARY_PASSWORD_MD5``
    (Basic), ``CAPILLARY_CLIENT_KEY`` with ``CAPILLARY_CLIENT_SECRET`` (OAuth), or
    ``CAPILLARY_TOKEN``. Raises ``ValueError`` naming what is missing or doubled.
    """
    env = os.environ if env is None else env
    # Line ends a .env file may leave are not part of a secret; a blank value is unset.
    env = {k: v.strip("\r\n") for k, v in env.items() if k.startswith("CAPILLARY_")}
    present = {name for name, value in env.items() if value.strip()}
    modes: list[str] = []
    if "CAPILLARY_TOKEN" in present:
        modes.append("CAPILLARY_TOKEN")
    oauth = {"CAPILLARY_CLIENT_KEY", "CAPILLARY_CLIENT_SECRET"} & present
    if oauth:
        modes.append("CAPILLARY_CLIENT_KEY/CAPILLARY_CLIENT_SECRET")
        for name in ("CAPILLARY_CLIENT_KEY", "CAPILLARY_CLIENT_SECRET"):
            if name not in present:
                raise ValueError(f"{name} is not set (OAuth needs both key and secret)")
    basic = {"CAPILLARY_USERNAME", "CAPILLARY_PASSWORD", "CAPILLARY_PASSWORD_MD5"} & present
    if basic:
        modes.append("CAPILLARY_USERNAME/CAPILLARY_PASSWORD")
        if "CAPILLARY_USERNAME" not in present:
            raise ValueError("CAPILLARY_USERNAME is not set (Basic auth needs it with a password)")
        passwords = {"CAPILLARY_PASSWORD", "CAPILLARY_PASSWORD_MD5"} & present
        if not passwords:
            raise ValueError(
                "CAPILLARY_PASSWORD is not set (or CAPILLARY_PASSWORD_MD5, the password's MD5)"
            )
        if len(passwords) == 2:
            raise ValueError("set CAPILLARY_PASSWORD or CAPILLARY_PASSWORD_MD5, not both")
    if not modes:
        raise ValueError(
            "no credentials: set CAPILLARY_USERNAME with CAPILLARY_PASSWORD (or "
            "CAPILLARY_PASSWORD_MD5), or CAPILLARY_CLIENT_KEY with CAPILLARY_CLIENT_SECRET, "
            "or CAPILLARY_TOKEN"
        )
    if len(modes) > 1:
        raise ValueError(f"more than one kind of credentials is set: {', '.join(modes)}; keep one")
    try:
        if modes[0] == "CAPILLARY_TOKEN":
            return BearerToken(env["CAPILLARY_TOKEN"])
        if oauth:
            return OAuthCredentials(env["CAPILLARY_CLIENT_KEY"], env["CAPILLARY_CLIENT_SECRET"])
        if "CAPILLARY_PASSWORD_MD5" in present:
            return BasicAuth.from_md5(env["CAPILLARY_USERNAME"], env["CAPILLARY_PASSWORD_MD5"])
        return BasicAuth(env["CAPILLARY_USERNAME"], env["CAPILLARY_PASSWORD"])
    except ValueError as exc:  # the messages name the variable's role, never its value
        raise ValueError(f"credentials: {exc}") from None

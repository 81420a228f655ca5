"""Target and credentials from ``CAPILLARY_*`` variables, as the command line reads them.

Values are never quoted in an error: only the variables' names are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ._auth import Auth, BasicAuth, BearerToken, OAuthCredentials
from ._config import Cluster, resolve_base_url

__all__ = ["base_url_from_env", "credentials_from_env"]


def base_url_from_env(env: Mapping[str, str] | None = None, *, allow_insecure: bool = False) -> str:
    """``CAPILLARY_BASE_URL``, else ``CAPILLARY_CLUSTER`` (a ``Cluster`` name), checked.

    Raises ``ValueError`` naming the variable when neither is set, both are, or
    the value will not do (plain ``http://`` only for loopback, or with
    ``allow_insecure=True``, as for the client).
    """
    env = os.environ if env is None else env
    base_url, cluster = env.get("CAPILLARY_BASE_URL"), env.get("CAPILLARY_CLUSTER")
    if base_url and cluster:
        raise ValueError("set CAPILLARY_BASE_URL or CAPILLARY_CLUSTER, not both")
    try:
        if base_url:
            return resolve_base_url(base_url, allow_insecure=allow_insecure)
        if cluster:
            return Cluster.from_name(cluster).base_url
    except ValueError as exc:
        # Named, not quoted: a URL may carry a user and password before its host.
        text = str(exc).removeprefix("base_url: ")
        if base_url:
            text = text.replace(repr(base_url), "the URL")
            raise ValueError(f"CAPILLARY_BASE_URL: {text}") from None
        raise ValueError(f"CAPILLARY_CLUSTER: {text}") from None
    raise ValueError("no target: set CAPILLARY_BASE_URL or CAPILLARY_CLUSTER")


def credentials_from_env(env: Mapping[str, str] | None = None) -> Auth:
    """Exactly one complete set of credentials from the environment.

    ``CAPILLARY_USERNAME`` with ``CAPILLARY_PASSWORD`` or ``CAPILLARY_PASSWORD_MD5``
    (Basic), ``CAPILLARY_CLIENT_KEY`` with ``CAPILLARY_CLIENT_SECRET`` (OAuth), or
    ``CAPILLARY_TOKEN``. Raises ``ValueError`` naming what is missing or doubled.
    """
    env = os.environ if env is None else env
    present = {name for name, value in env.items() if name.startswith("CAPILLARY_") and value}
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

"""One-line messages about errors and tracking stores, written once for training, sweeps and the dashboard.

The first line of an error; a URI without its password; whether a tracking server answers;
what a 401 or a 403 from it means. Imports nothing heavy: `python -m train`'s checks and the
dashboard use it before (or without) TensorFlow.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request

FIRST_LINE_LIMIT = 300  # characters of an error kept in a message; tracebacks and SQL dumps are longer
HEALTH_TIMEOUT_SECONDS = 5


def first_line(error: BaseException, limit: int = FIRST_LINE_LIMIT) -> str:
    """The first line of an error's text (its type's name when it has none), at most `limit` characters."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def redact_uri(uri: str) -> str:
    """`uri` with its password shown as ***, whatever the scheme (http, https, postgresql, mysql, ...).

    SQLAlchemy's URL parser reads every `scheme://user:password@host` form, percent-escapes included;
    a string it cannot parse (a bare path) has no password unless it holds an `@`, which is then cut."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
        if url.password:
            return url.render_as_string(hide_password=True)
        if url.username and url.drivername in ("http", "https"):  # https://TOKEN@host: the name is the secret
            return uri.replace(f"{uri.split('://', 1)[1].split('@', 1)[0]}@", "***@", 1)
        return uri  # nothing to hide: shown as given (the render would unescape its path)
    except (ArgumentError, ValueError, TypeError):
        return re.sub(r"^([^@]*?//)?[^@/]*@", lambda m: (m.group(1) or "") + "***@", uri) if "@" in uri else uri


def scrub(text: str, uri: str) -> str:
    """`text` (an error's message, say) with `uri` and its password replaced by the redacted URI and ***."""
    shown = redact_uri(uri)
    text = text.replace(uri, shown)
    password = _password(uri)
    return text.replace(password, "***") if password else text


def _password(uri: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(uri).password or ""
    except (ArgumentError, ValueError, TypeError):
        return ""


def server_down(uri: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> str | None:
    """Why the tracking server at `uri` does not answer its /health page, or None when it answers
    (with any HTTP status: authentication and paths are for the first real call to check)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as error:
        return str(getattr(error, "reason", error)) or type(error).__name__


def database_down(uri: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> str | None:
    """Why the PostgreSQL or MySQL store at `uri` cannot be connected to, or None when it can.
    In seconds: MLflow itself retries a database that is down for two minutes before it says so."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": int(max(1, timeout))})
    except Exception as error:  # noqa: BLE001 - a URL or driver SQLAlchemy cannot use: MLflow will say why
        return None if isinstance(error, ImportError) else scrub(first_line(error), uri)
    try:
        with engine.connect():
            return None
    except Exception as error:  # noqa: BLE001 - refused, unknown host, wrong password: one line
        return scrub(first_line(getattr(error, "orig", None) or error), uri)
    finally:
        engine.dispose()


def unreachable(uri: str, reason: str) -> str:
    """The message for a tracking server that does not answer, or a database store that cannot be opened."""
    if uri.startswith(("http://", "https://")):
        return (f"tracking server {redact_uri(uri)} does not answer ({reason}); start it "
                "(`mlflow server --backend-store-uri sqlite:///mlflow.db`) or point MLFLOW_TRACKING_URI at a running one")
    return f"tracking store {redact_uri(uri)} cannot be opened ({reason}); start the database or fix MLFLOW_TRACKING_URI"


def refusal(error: BaseException, uri: str, need: str, alternative: str = "") -> str | None:
    """The message for a 401 or 403 from the tracking server at `uri`, else None.

    `need` names the permission the caller needed ("READ on these experiments"); `alternative`
    is one more way out, said last."""
    code = getattr(error, "error_code", "") or ""
    status = getattr(getattr(error, "response", None), "status_code", None)
    text = str(error)
    shown = redact_uri(uri)
    if code == "UNAUTHENTICATED" or status == 401 or "error code 401" in text:
        return (f"tracking server {shown} refused {_who()} (401 Unauthorized); set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
    if code == "PERMISSION_DENIED" or status == 403 or "error code 403" in text:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
        return (f"tracking server {shown} denied {f'user {user!r}' if user else 'this user'} access (403 Forbidden); "
                f"ask its administrator for {need}{', ' + alternative if alternative else ''}, or use other credentials")
    return None


def _who() -> str:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    if user:
        return f"the credentials of {user!r}"
    return "the token in MLFLOW_TRACKING_TOKEN" if os.environ.get("MLFLOW_TRACKING_TOKEN") else "requests without credentials"

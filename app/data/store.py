"""The tracking store: the URI, connecting, and every failure told in one line.

Nothing here imports Streamlit: the page, the report command and the benchmark share it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse

import requests
from mlflow.tracking import MlflowClient

from train import contract, messages
from train.errors import ConfigError
from train.tracking import store as tracking_store

HEALTH_TIMEOUT_SECONDS = 3
DATABASE_SCHEMES = ("postgresql", "mysql")  # with a driver suffix too: postgresql+psycopg://
# How MLflow's client words a connection failure it has wrapped in an MlflowException.
CONNECTION_MARKERS = ("Max retries exceeded", "Connection refused", "Failed to establish", "timed out")


class StoreError(RuntimeError):
    """A tracking-store failure told in one line the user can act on.

    `kind` is one of: unreachable, auth, missing, other.
    """

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


def fail_fast() -> None:
    """A dashboard should say "server down" in seconds, not after MLflow's minutes of retries
    (MLflow reads these at each request; a value the user set wins)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def tracking_uri() -> str:
    return contract.tracking_uri()


def display_uri(uri: str) -> str:
    """The URI with its password shown as ***, safe to print on a page or in a report."""
    return messages.redact_uri(uri)


def ui_base_url(uri: str) -> str:
    """Where the MLflow UI lives: MLFLOW_UI_URL, the tracking server itself, or `mlflow ui`'s default."""
    explicit = os.environ.get("MLFLOW_UI_URL", "").strip()
    if explicit:
        return explicit.rstrip("/")
    if uri.startswith(("http://", "https://")):  # a link carries no credentials, not even hidden ones
        parts = urllib.parse.urlsplit(uri)
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])).rstrip("/")
    return "http://localhost:5000"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def explain(error: BaseException, uri: str) -> StoreError:
    """A StoreError that says what went wrong with the store at `uri` and what to do."""
    if isinstance(error, StoreError):
        return error
    refused = messages.refusal(error, uri, need="READ permission on these experiments")
    if refused:
        return StoreError(_sentence(refused), "auth")
    text = str(error)
    if isinstance(error, requests.exceptions.RequestException) or any(marker in text for marker in CONNECTION_MARKERS):
        return StoreError(_sentence(messages.unreachable(uri, messages.scrub(messages.first_line(error, 120), uri))), "unreachable")
    return StoreError(f"The tracking store {display_uri(uri)} failed: {messages.scrub(messages.first_line(error), uri)}")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def check_reachable(uri: str) -> None:
    """Fail in seconds when the store cannot be used, instead of after MLflow's retries."""
    if uri.startswith(("http://", "https://")):
        reason = messages.server_down(uri, HEALTH_TIMEOUT_SECONDS)
        if reason is not None:
            raise StoreError(_sentence(messages.unreachable(uri, reason)), "unreachable")
    elif uri.startswith(DATABASE_SCHEMES):
        reason = messages.database_down(uri, HEALTH_TIMEOUT_SECONDS)
        if reason is not None:
            raise StoreError(_sentence(messages.unreachable(uri, reason)), "unreachable")
    elif uri.startswith("sqlite:///"):
        # A reader never creates or migrates a store (MLflow's client would): a file that is not
        # there, or not a whole store yet, is one line (train/tracking/store.py decides which).
        try:
            tracking_store.require_existing_store(uri)
        except ConfigError as error:
            raise StoreError(_sentence(f"{error} (`python -m train --data demo` makes one)"), "missing") from None


def open_client(uri: str) -> MlflowClient:
    """A client for `uri`, after checking the store answers and accepts the credentials.

    Credentials come the way MLflow's own client reads them: MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN.
    """
    check_reachable(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - every failure becomes one line on the page
        raise explain(error, uri) from None
    return client


def store_key(uri: str) -> str:
    """The store and who reads it (the credentials hashed), to key caches shared by sessions."""
    who = [os.environ.get(name, "") for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")]
    return f"{uri}#{hashlib.sha1(chr(0).join(who).encode()).hexdigest()[:16]}"

"""A real PostgreSQL for the team-server tests: Debian's `postgresql`, started in a temp folder.

PostgreSQL refuses to run as root; as root (CI) the server runs as the `postgres` user
that Debian's package creates, in a folder it owns. The folder is outside pytest's
tmp_path, whose parents are private to root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.app_fixtures import free_port


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run `bash .ci/system-deps.sh` (Debian's postgresql package)")
    return Path(found[-1]).parent


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def basic_auth_env(folder: Path, admin: tuple[str, str], secret: str) -> dict[str, str]:
    """Write a basic-auth ini in `folder` (default READ, `admin` as admin); return the server's env.

    It turns on MLflow's own opt-in credential cache: a password is checked (scrypt, 0.1-0.2 s of
    server CPU) once per user and worker, not on each of the ~100 requests a training makes. A
    wrong password is never cached, and permissions are still checked on every request."""
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\n"
        f"admin_username = {admin[0]}\nadmin_password = {admin[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 3600\n"
    )
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": secret}


@contextlib.contextmanager
def postgres_server():
    """Start PostgreSQL on a free loopback port; yield a function that makes a database URI."""
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="lrlab-pg-"))
    folder.chmod(0o755)
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]), check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run(_as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start"]), check=True, capture_output=True)

    def database(name: str) -> str:
        done = subprocess.run(_as_postgres([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name]), capture_output=True, text=True)
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise RuntimeError(f"createdb {name} failed: {done.stderr.strip()}")
        return f"postgresql://postgres@127.0.0.1:{port}/{name}"

    try:
        yield database
    finally:
        subprocess.run(_as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)

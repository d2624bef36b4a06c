"""The project's own files tell the truth: what they cite exists, `mlflow run`'s environment has what
the code needs, and CI cannot pass by skipping the browser tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=~!; ]", requirement, maxsplit=1)[0].lower()


def test_every_test_file_the_project_cites_exists():
    cited = {}
    for path in [REPO / "MLproject", REPO / "README.md", REPO / "Makefile", REPO / "pyproject.toml", *sorted((REPO / "docs").glob("*.md"))]:
        for found in re.findall(r"tests/[\w/]+\.py", path.read_text()):
            cited.setdefault(found, path.name)
    assert cited, "the project names its tests somewhere"
    assert not {test: where for test, where in cited.items() if not (REPO / test).is_file()}


def test_conda_yaml_has_what_training_and_sweeps_import():
    """`mlflow run` builds its environment from conda.yaml alone: training's dependencies and the
    sweeps' (Optuna, and psycopg for a PostgreSQL storage) must be there."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {_name(r) for r in [*project["dependencies"], *project["optional-dependencies"]["sweep"]]}
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_list = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert needed - {_name(r) for r in pip_list} == set()


BROWSER_TEST = """
from tests.app_fixtures import chromium_page

def test_needs_a_browser():
    with chromium_page():
        pass
"""


def test_a_browser_test_fails_in_ci_without_chromium_and_skips_elsewhere(tmp_path):
    (tmp_path / "test_needs_browser.py").write_text(BROWSER_TEST)
    results = {}
    for ci in ("true", ""):
        env = {**os.environ, "CI": ci, "CHROMIUM": str(tmp_path / "no-chromium"), "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        results[ci] = done
    assert results["true"].returncode == 1 and "CI must run this test" in results["true"].stdout, results["true"].stdout
    assert results[""].returncode == 0 and "1 skipped" in results[""].stdout, results[""].stdout


def test_the_readme_says_what_the_gpu_figures_measured_and_nothing_of_how_the_machine_was_reached():
    text = (REPO / "README.md").read_text()
    gpu = text[text.index("**On a GPU**") :].split("\n\n")[0]
    assert "H100" in gpu and "JAX backend" in gpu and "bench/bench_gpu_keras.py" in gpu
    assert not [word for word in ("lent", "registry", "transfer limit", "MiB", "cannot be installed") if word in gpu]


@pytest.mark.slow
def test_make_setup_installs_the_project_without_setuptools_warnings(tmp_path):
    """`make setup`'s install line, in a fresh venv with a current pip (which shows the build
    backend's warnings): no 'Editable installation' warning for every user to read."""
    line = next(line.strip() for line in (REPO / "Makefile").read_text().splitlines() if "pip install -q -e" in line)
    warnings_filter = re.search(r"PYTHONWARNINGS='([^']+)'", line)
    assert warnings_filter, line
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--upgrade", "pip"], check=True, capture_output=True)
    done = subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", "-e", str(REPO)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": warnings_filter.group(1)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Editable installation" not in done.stdout + done.stderr

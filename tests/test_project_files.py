"""The project's own files tell the truth: what they cite exists, `mlflow run`'s environment has what
the code needs, and CI cannot pass by skipping the browser tests."""

from __future__ import annotations

import ast
import importlib.metadata
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


def test_every_file_the_readme_and_docs_link_to_exists():
    """A guide whose links lead nowhere is worse than none: every relative link of README.md,
    CHANGELOG.md and docs/*.md names a file of the checkout (anchors aside)."""
    broken = []
    for page in [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if not link.startswith(("http://", "https://", "#", "mailto:")) and not (page.parent / link.split("#")[0]).exists():
                broken.append(f"{page.relative_to(REPO)} -> {link}")
    assert not broken


def test_conda_yaml_has_what_training_and_sweeps_import():
    """`mlflow run` builds its environment from conda.yaml alone: training's dependencies and the
    sweeps' (Optuna, and psycopg for a PostgreSQL storage) must be there."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the project allows 3.10, where the check cannot read TOML)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {_name(r) for r in [*project["dependencies"], *project["optional-dependencies"]["sweep"]]}
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_list = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert needed - {_name(r) for r in pip_list} == set()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports(folder: str) -> set[str]:
    """Top-level names imported anywhere under `folder` that are neither the standard library nor ours."""
    names = set()
    for path in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"train", "app", "sweep"}


@pytest.mark.parametrize("folder, extras", [("train", ["cpu"]), ("app", ["cpu", "dashboard"]), ("sweep", ["cpu", "sweep"])])
def test_every_package_a_folder_imports_is_declared(folder, extras):
    """An import that works only because another package pulled it in breaks on the day that one
    drops it: each third-party import is declared in pyproject.toml, in the core or the folder's extra."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the project allows 3.10, where the check cannot read TOML)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_normalized(_name(r)) for r in [*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e])]}
    providers = importlib.metadata.packages_distributions()
    undeclared = {name for name in _third_party_imports(folder) if not declared & {_normalized(d) for d in providers.get(name, [name])}}
    assert not undeclared, f"{folder}/ imports {sorted(undeclared)}: declare them in pyproject.toml"


def test_the_readme_parameter_table_is_every_mlproject_main_parameter_as_trainconfig_says():
    """The table is written from TrainConfig (`python -m docs.params_table --write`): a parameter
    added, renamed or given another default or help text shows up here until it is rewritten."""
    from docs.params_table import main_parameters, readme_with_table

    readme = (REPO / "README.md").read_text()
    assert readme_with_table(readme) == readme, "README.md's parameter table is stale: run python -m docs.params_table --write"
    rows = re.findall(r"^\| `(\w+)` \|", readme.split("<!-- parameter table", 1)[1].split("<!-- end of parameter table", 1)[0], re.M)
    assert set(main_parameters()) <= set(rows), "every parameter of MLproject's main entry point has a row"


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


def test_nothing_patches_sys_path():
    """The project is installed (`pip install -e .`): train, app and sweep import from anywhere, and a
    script that patched sys.path would hide a packaging mistake that users then meet."""
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "*.py"], capture_output=True, text=True, check=True).stdout.split()
    patched = [path for path in tracked if re.search(r"sys\.path\.(insert|append)|sys\.path \+?=", (REPO / path).read_text())]
    assert not patched, f"sys.path patched in {patched}: import the installed packages instead"

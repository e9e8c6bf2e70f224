"""pyproject.toml and environment.yml list the same dependencies."""

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip(
        "tomli", reason="reading pyproject.toml needs Python 3.11+ or tomli"
    )

pytestmark = pytest.mark.lesson00

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _name(requirement):
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def pip_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    names |= {_name(r) for r in project["optional-dependencies"]["dev"]}
    return {CONDA_NAMES.get(n, n) for n in names}


def conda_dependencies():
    names, in_dependencies = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if not line.startswith(" "):
            in_dependencies = line.startswith("dependencies:")
        m = re.match(r"^  - ([A-Za-z0-9_.\-]+)", line)  # top-level entries only
        if in_dependencies and m:
            names.add(_name(m.group(1)))
    return names - {"python", "pip"}


def test_environment_yml_matches_pyproject():
    pip, conda = pip_dependencies(), conda_dependencies()
    assert pip == conda, (
        f"only in pyproject: {sorted(pip - conda)}; only in environment.yml: {sorted(conda - pip)}"
    )


def test_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for r in project["dependencies"] + project["optional-dependencies"]["dev"]:
        pins[CONDA_NAMES.get(_name(r), _name(r))] = r[len(_name(r)) :].strip()
    env = (ROOT / "environment.yml").read_text()
    for name, spec in pins.items():
        assert f"  - {name}{spec}\n" in env, f"{name}{spec} not in environment.yml"

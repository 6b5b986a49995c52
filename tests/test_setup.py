"""Binder and conda setup, checked statically (no conda channel or Docker engine is reachable)."""

import os
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
PIP_TO_CONDA = {"torch": "pytorch-cpu", "matplotlib": "matplotlib-base"}


def _spec(requirement: str) -> tuple[str, str]:
    match = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement)
    assert match is not None, requirement
    name, version = match.groups()
    return name.lower(), version.replace(" ", "")


def _conda() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    specs = [d for d in env["dependencies"] if isinstance(d, str)]
    return dict(_spec(re.sub(r"^([A-Za-z0-9_.-]+)=(\d)", r"\1==\2", s)) for s in specs)


def test_binder_environment_is_a_copy_of_the_root_one() -> None:
    assert (ROOT / "binder" / "environment.yml").read_text() == (ROOT / "environment.yml").read_text()


def test_python_and_cpu_pytorch_are_pinned() -> None:
    conda = _conda()
    assert conda["python"] == "==3.11"
    assert conda["pytorch-cpu"] == "==2.13.0"
    assert "pytorch" not in conda and "torch" not in conda


def test_conda_and_pip_name_the_same_packages_and_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip = dict(_spec(r) for r in project["dependencies"] + project["optional-dependencies"]["lab"])
    conda = _conda()
    for name, version in pip.items():
        assert conda.get(PIP_TO_CONDA.get(name, name)) == version, name
    assert set(conda) - {PIP_TO_CONDA.get(n, n) for n in pip} == {"python", "pip"}


def test_no_local_paths_in_a_pip_section() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert all(not re.match(r"(-e|\.|/|file:)", entry) for section in pip_sections for entry in section)


def test_post_build_is_executable_and_stops_on_errors() -> None:
    post_build = ROOT / "binder" / "postBuild"
    lines = post_build.read_text().splitlines()
    assert os.access(post_build, os.X_OK)
    assert lines[0].startswith("#!/bin/bash") and "set -euo pipefail" in lines
    assert any("pip install --no-deps -e ." in line for line in lines)


def test_readme_binder_link_opens_an_existing_notebook() -> None:
    links = re.findall(
        r"mybinder\.org/v2/gh/[^)\s]+urlpath=lab/tree/([^)\s&]+)", (ROOT / "README.md").read_text()
    )
    assert links and all((ROOT / link).is_file() for link in links)


def test_lab_settings_turn_off_the_news_prompt() -> None:
    import json

    settings = json.loads((ROOT / "binder" / "overrides.json").read_text())
    assert settings["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"


def test_pre_commit_runs_the_ruff_that_make_check_runs() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    rev = next(r["rev"] for r in config["repos"] if r["repo"].endswith("/ruff-pre-commit"))
    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "test"
    ]
    assert "v" + dict(_spec(r) for r in test_extra)["ruff"].removeprefix("==") == rev

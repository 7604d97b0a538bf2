"""The project as a package a plant installs: ``pip install .`` into a fresh virtual environment
gives the console script ``erp-mes-sync``, which reads the plant's flows, crosswalks and suites
from folders of the plant's own repository, named by options or by the environment, from any
working directory and without the clone on the path."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from etl.config.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def test_the_package_pins_its_runtime_dependencies_as_requirements_txt_does() -> None:
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = {
        line.split("==")[0].lower(): line.strip()
        for line in (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert declared, "pyproject.toml declares no dependencies"
    for requirement in declared:
        assert pins.get(requirement.split("==")[0].lower()) == requirement, requirement


def _distribution_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s;<>=!~\[(]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_library_the_package_imports_is_among_what_it_installs() -> None:
    """A module of etl/ importing a library the wheel does not pull in fails only where the package
    is installed alone: every third-party import must come from a declared dependency or one of
    theirs."""
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    installs, todo = set(), list(_distribution_names(declared))
    while todo:
        name = todo.pop()
        if name in installs:
            continue
        installs.add(name)
        try:
            todo += list(_distribution_names(metadata.requires(name) or []))
        except metadata.PackageNotFoundError:
            continue
    imported: set[str] = set()
    for path in (REPO_ROOT / "etl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    providers = metadata.packages_distributions()
    missing = sorted(
        module for module in imported - set(sys.stdlib_module_names) - {"etl", "demo"}
        if not _distribution_names(providers.get(module, [module])) & installs
    )
    assert not missing, f"etl imports {missing}, which pyproject.toml's dependencies do not install"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the package's wheel installed, built from a copy of the
    sources (the build writes nothing into the clone). Its dependencies come from the shared environment through a
    .pth file, as ``--no-deps`` leaves them out."""
    root = tmp_path_factory.mktemp("package")
    sources = root / "sources"
    sources.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, sources / name)
    shutil.copytree(REPO_ROOT / "etl", sources / "etl", ignore=shutil.ignore_patterns("__pycache__"))
    # The wheel is built here, with this environment's setuptools and wheel, offline.
    dist = root / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(sources)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("erp_mes_sync-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    (Path(purelib) / "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return venv


def _plant_repository(root: Path) -> Path:
    """A plant's own repository: flows and crosswalks under sync/, suites under quality/ (not
    the clone's expectations/ beside them)."""
    plant = root / "plant"
    shutil.copytree(REPO_ROOT / "mappings", plant / "sync")
    shutil.copytree(REPO_ROOT / "expectations", plant / "quality")
    return plant


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ETL_MAPPINGS_DIR", "ETL_EXPECTATIONS_DIR")}
    return {**env, **extra}


def test_the_console_script_runs_from_the_plants_repository(installed: Path, tmp_path: Path) -> None:
    plant = _plant_repository(tmp_path)
    script = installed / "bin" / "erp-mes-sync"
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import etl; print(etl.__file__)"],
                           cwd=plant, env=_env(), capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(installed)), where.stdout

    by_env = subprocess.run([str(script), "check"], cwd=plant, capture_output=True, text=True, timeout=300,
                            env=_env(ETL_MAPPINGS_DIR=str(plant / "sync"), ETL_EXPECTATIONS_DIR=str(plant / "quality")))
    assert by_env.returncode == 0, by_env.stdout + by_env.stderr
    assert f"in {plant / 'sync'}" in by_env.stdout

    by_options = subprocess.run(
        [str(script), "--mappings", "sync", "--expectations", "quality", "check"],
        cwd=plant, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert by_options.returncode == 0, by_options.stdout + by_options.stderr

    # Without the suites' folder the flows' suites are not found, and the error says where it looked.
    missing = subprocess.run([str(script), "--mappings", "sync", "check"], cwd=plant, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert "expectations" in missing.stdout + missing.stderr


def test_python_dash_m_etl_is_the_same_command(installed: Path, tmp_path: Path) -> None:
    plant = _plant_repository(tmp_path)
    run = subprocess.run([str(installed / "bin" / "python"), "-m", "etl", "--help"], cwd=plant, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "--expectations" in run.stdout and "--connections" in run.stdout


def test_the_guide_commands_parse_and_the_variables_are_the_ones_read() -> None:
    """docs/installing-as-a-package.md: each erp-mes-sync command line is one the parser takes,
    and the table names the variables etl.config.paths and the connections read."""
    from etl.cli.main import build_parser
    from etl.config.paths import EXPECTATIONS_ENV, MAPPINGS_ENV
    from etl.sync.connections import CONNECTIONS_FILE_ENV

    guide = (REPO_ROOT / "docs" / "installing-as-a-package.md").read_text(encoding="utf-8")
    commands = [line.split()[1:] for line in guide.splitlines() if line.startswith("erp-mes-sync ")]
    assert len(commands) == 2
    for argv in commands:
        args = build_parser().parse_args(argv)
        assert (args.mappings, str(args.expectations)) == ("sync", "quality")
    for variable in (MAPPINGS_ENV, EXPECTATIONS_ENV, CONNECTIONS_FILE_ENV):
        assert f"| `{variable}` |" in guide

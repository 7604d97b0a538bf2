"""docs/event-driven-runs.md: its YAML validates as written, the flow it prints is the one the
benchmark ships, and its shell and systemd commands are commands this project has."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from test_config import Mappings, flow_dict

from etl.cli.main import build_parser, cmd_watch

REPO = Path(__file__).resolve().parents[2]
GUIDE = (REPO / "docs" / "event-driven-runs.md").read_text(encoding="utf-8")


def _blocks(kind: str) -> list[str]:
    return [b.split("```")[0] for b in GUIDE.split(f"```{kind}\n")[1:]]


@pytest.fixture
def mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Mappings:
    monkeypatch.chdir(tmp_path)
    return Mappings(tmp_path / "m")


@pytest.mark.parametrize("block", [b for b in _blocks("yaml") if b.startswith("trigger:")])
def test_each_trigger_block_loads_as_written(mappings: Mappings, block: str) -> None:
    mappings.write("x", yaml.safe_dump(flow_dict(), sort_keys=False) + block)
    assert mappings.load().flows["x"].trigger is not None


def test_the_guide_shows_the_benchmark_flow_as_shipped() -> None:
    (block,) = [b for b in _blocks("yaml") if b.startswith("flow: confirmations_notify\n")]
    path = REPO / "bench" / "latency" / "mappings" / "flows" / "confirmations_notify.yaml"
    shipped = yaml.safe_load(path.read_text(encoding="utf-8"))
    shipped.pop("description")
    assert yaml.safe_load(block) == shipped


def test_the_watch_commands_parse() -> None:
    unit = next(b for b in _blocks("ini") if "ExecStart=" in b)
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    commands = [shlex.split(exec_start.removeprefix("ExecStart="))]
    commands += [shlex.split(line) for b in _blocks("sh") for line in b.splitlines() if " etl " in line]
    assert len(commands) == 2
    for argv in commands:
        assert argv[1:3] == ["-m", "etl"]
        args = build_parser().parse_args(argv[3:])
        assert args.func is cmd_watch and args.flows
    assert (REPO / "sql" / "events" / "notify_on_commit.sql").is_file()

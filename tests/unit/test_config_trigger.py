"""The ``trigger:`` block of a flow: events that wake it, validated on load with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import Mappings, flow_dict

from etl.config.project import load_project

LATENCY_MAPPINGS = Path(__file__).resolve().parents[2] / "bench" / "latency" / "mappings"


@pytest.fixture
def mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Mappings:
    monkeypatch.chdir(tmp_path)
    return Mappings(tmp_path / "m")


def _with_trigger(trigger: str) -> str:
    """A flow file whose trigger block is written as a person writes it (a bare ``on:``)."""
    import yaml

    return yaml.safe_dump(flow_dict(), sort_keys=False) + trigger


def test_a_bare_on_key_is_read_as_the_word_not_as_true(mappings: Mappings) -> None:
    mappings.write("x", _with_trigger("trigger:\n  on:\n    postgres_notify: {channel: work_order_changed}\n"))
    flow = mappings.load().flows["x"]
    assert flow.trigger is not None and flow.trigger.on.kind == "postgres_notify"
    # No connection given: the listener uses the flow's source database.
    assert flow.trigger_connection() == flow.source.connection


def test_mqtt_trigger_takes_its_broker_from_a_connection(mappings: Mappings) -> None:
    mappings.write("x", _with_trigger(
        "trigger:\n  on:\n    mqtt: {connection: mes_broker, topic: spBv1.0/SH01/DDATA/mes/+}\n"
    ))
    flow = mappings.load().flows["x"]
    assert flow.trigger is not None and flow.trigger.on.mqtt is not None
    assert (flow.trigger.on.mqtt.qos, flow.trigger_connection()) == (1, "mes_broker")


@pytest.mark.parametrize(("block", "path", "says"), [
    ("trigger:\n  on: {}\n", "trigger.on", "give exactly one of postgres_notify, mqtt, redis (got none)"),
    ("trigger:\n  on:\n    postgres_notify: {channel: a}\n    mqtt: {connection: b, topic: t}\n",
     "trigger.on", "got postgres_notify, mqtt"),
    ("trigger:\n  on:\n    postgres_notify: {channel: Drop Table}\n", "trigger.on.postgres_notify.channel", "is not a channel name"),
    ("trigger:\n  on:\n    mqtt: {connection: b, topic: plant/#/x}\n", "trigger.on.mqtt.topic", "'#' only for the last"),
    ("trigger:\n  on:\n    mqtt: {connection: b, topic: t, qos: 3}\n", "trigger.on.mqtt.qos", ""),
    ("trigger:\n  on:\n    mqtt: {host: 10.0.0.1, topic: t}\n", "trigger.on.mqtt.host", "unknown key"),
    ("trigger:\n  on:\n    redis: {connection: r, channel: c}\n", "trigger.on", "not supported yet"),
    ("trigger:\n  on:\n    postgres_notify: {channel: a}\n  every: 5s\n", "trigger.every", "unknown key"),
])
def test_a_bad_trigger_is_refused_with_file_and_key(mappings: Mappings, block: str, path: str, says: str) -> None:
    mappings.write("x", _with_trigger(block))
    found = [p for p in mappings.problems() if p.path == path]
    assert found, mappings.messages()
    assert found[0].file == "m/flows/x.yaml" and says in found[0].message


def test_the_latency_flows_load() -> None:
    project = load_project(LATENCY_MAPPINGS)
    assert {f.trigger.on.kind for f in project.flows.values() if f.trigger} == {"postgres_notify", "mqtt"}


def test_watch_refuses_a_flow_without_a_trigger(mappings: Mappings, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from etl.cli.main import main

    mappings.write("x", yaml.safe_dump(flow_dict(), sort_keys=False))
    assert main(["--mappings", str(mappings.root), "watch", "x"]) == 2
    assert "m/flows/x.yaml: trigger: flow 'x' has no trigger: nothing to watch" in capsys.readouterr().err

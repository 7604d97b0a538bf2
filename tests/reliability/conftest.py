"""Fixtures of the reliability tests: the pristine demo pair on PostgreSQL, sites cloned from it,
and the figures (crash points, trials, inputs, rows lost / duplicated) printed after the run."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sync_harness import Diff, Postgres, SiteFactory

from demo.setup import init_demo

#: Orders of the pristine demo: small enough to clone and sync in well under a second.
ORDERS = 120
# The demo factory's clock for this file: the rows its tests write by hand are dated against it.
DEMO_AS_OF = datetime(2026, 11, 20, 8, 0)
SEED = 11


@dataclass
class Figures:
    """What the reliability tests tried, for the summary and docs/reliability.md."""

    counts: Counter[str] = field(default_factory=Counter)
    crash_points: set[str] = field(default_factory=set)
    kill_steps: Counter[str] = field(default_factory=Counter)
    inputs: set[str] = field(default_factory=set)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def compared(self, diff: Diff) -> None:
        self.counts["rows compared with the twin"] += diff.compared
        self.counts["rows lost"] += len(diff.lost)
        self.counts["rows duplicated (extra)"] += len(diff.extra)
        self.counts["rows changed"] += len(diff.changed)

    def as_dict(self) -> dict[str, Any]:
        return {
            **dict(sorted(self.counts.items())),
            "distinct crash points": len(self.crash_points),
            "bad inputs tried": len(self.inputs),
            "where random kills landed": dict(self.kill_steps.most_common()),
        }


_FIGURES = pytest.StashKey[Figures]()


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Figures:
    return request.config.stash.setdefault(_FIGURES, Figures())


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, None)
    if figures is None:
        return
    terminalreporter.write_sep("-", "reliability figures (docs/reliability.md)")
    data = figures.as_dict()
    for name, value in data.items():
        terminalreporter.write_line(f"{name}: {value}")
    if getattr(config, "cache", None) is not None:
        config.cache.set("reliability/figures", json.loads(json.dumps(data, default=str)))


@pytest.fixture(scope="session")
def pg(pg_server: str) -> Iterator[Postgres]:
    postgres = Postgres(pg_server)
    yield postgres
    postgres.drop_all()


@pytest.fixture(scope="session")
def pristine(pg: Postgres, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The demo ERP and MES, filled once by the factory; every site is a clone of them."""
    tmp = tmp_path_factory.mktemp("pristine")
    names = {side: pg.create(f"tpl_{side}") for side in ("erp", "mes")}
    init_demo(
        erp_url=pg.url(names["erp"]).render_as_string(hide_password=False),
        mes_url=pg.url(names["mes"]).render_as_string(hide_password=False),
        warehouse_url=f"sqlite:///{tmp / 'warehouse.db'}",
        orders=ORDERS, seed=SEED, connections_file=tmp / "connections.json", as_of=DEMO_AS_OF,
    )
    return names


@pytest.fixture
def sites(pg: Postgres, pristine: dict[str, str], tmp_path: Path) -> Iterator[SiteFactory]:
    factory = SiteFactory(pg, pristine, tmp_path)
    yield factory
    factory.close()

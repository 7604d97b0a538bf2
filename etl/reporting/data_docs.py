"""Great Expectations Data Docs: every sync flow's suite run by GX itself on its target table.

The runs check each batch with the pipeline's own evaluation of the suites (etl.sync.validation);
this is the daily second opinion, in GX's own words: one validation per flow over its whole
target table, rendered as GX's Data Docs site, which the data-quality report links. GX keeps
its project (suites, results) beside the site folder, in ``<site>/../gx``, and the rendered site is
copied into ``site`` (``report.data_docs`` in mappings/defaults.yaml).

Connection URLs never reach GX's files: each data source names an environment variable
(``${EMS_GX_ERP_DB}``), set in this process only, which GX substitutes when it connects.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from etl.config.flows import Project
from etl.config.suites import suite_path
from etl.core.printable import get_logger
from etl.sync.connections import Connections
from etl.sync.validation import parameters

if TYPE_CHECKING:
    from great_expectations.datasource.fluent import SQLDatasource

log = get_logger("etl.reporting.data_docs")

@dataclass(frozen=True)
class DataDocs:
    index: Path
    #: flow -> whether GX found its whole target table within the suite.
    success: dict[str, bool]


def _env_name(conn_id: str) -> str:
    return f"EMS_GX_{conn_id.upper()}"


def data_docs_folder(project: Project) -> Path | None:
    """The site folder the report links (``report.data_docs``), relative to the repository."""
    from etl.config.paths import REPO_ROOT

    configured = project.defaults.report.data_docs
    if not configured:
        return None
    folder = Path(configured)
    return folder if folder.is_absolute() else REPO_ROOT / folder


def build_data_docs(project: Project, connections: Connections, site: Path, now_utc: datetime) -> DataDocs:
    """Validate each sync flow's target table with its suite through GX and build Data Docs
    into ``site``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(site.parent))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    sources: dict[str, SQLDatasource] = {}
    success: dict[str, bool] = {}
    for flow in project.flows.values():
        if flow.expectations is None:
            continue
        conn_id = flow.target.connection
        if conn_id not in sources:
            os.environ[_env_name(conn_id)] = connections.url(conn_id).render_as_string(hide_password=False)
            sources[conn_id] = context.data_sources.add_or_update_sql(
                name=conn_id, connection_string=f"${{{_env_name(conn_id)}}}",
            )
        source = sources[conn_id]
        asset_name = f"{flow.flow}__{flow.target.table}"
        try:
            asset = source.get_asset(asset_name)
        except LookupError:
            asset = source.add_table_asset(name=asset_name, table_name=flow.target.table)
        try:
            batch = asset.get_batch_definition("whole_table")
        except KeyError:
            batch = asset.add_batch_definition_whole_table("whole_table")
        raw = json.loads(suite_path(Path(project.expectations_dir), flow).read_text(encoding="utf-8"))
        raw.pop("id", None)
        suite = context.suites.add_or_update(gx.ExpectationSuite(**raw))
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=flow.flow, data=batch, suite=suite)
        )
        params = parameters(flow.expectations, now_utc)
        result = definition.run(
            expectation_parameters={k: v for k, v in params.items() if k != "now_utc"},
            result_format={"result_format": "SUMMARY"},
        )
        success[flow.flow] = bool(result.success)
        for r in result.results:
            if not r.success and r.expectation_config is not None:
                log.info("data docs: flow %s: expectation %s failed", flow.flow, r.expectation_config.meta.get("name"))
        log.info("data docs: flow %s on %s.%s: %s", flow.flow, conn_id, flow.target.table,
                 "within its suite" if result.success else "outside its suite")
    context.build_data_docs()
    built = site.parent / "gx" / "uncommitted" / "data_docs" / "local_site"
    shutil.copytree(built, site, dirs_exist_ok=True)
    return DataDocs(site / "index.html", success)

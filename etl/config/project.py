"""The whole project under mappings/: every flow, crosswalk and suite read and cross-checked at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from etl.config.flows import (
    RECONCILIATIONS_FILE,
    BusinessReconciliation,
    Defaults,
    Flow,
    Project,
    ReconciliationFile,
    crosswalks_used,
    problems_from_validation,
    read_yaml,
    unknown_key_message,
)
from etl.config.paths import DEFAULT_MAPPINGS
from etl.core.errors import ConfigError, ConfigProblem, display_path


def _merge_defaults(raw: dict[str, Any], defaults: Defaults) -> dict[str, Any]:
    merged = dict(raw)
    for section in ("load", "cursor"):
        base = getattr(defaults, section)
        if section in merged and isinstance(merged[section], dict):
            merged[section] = {**base, **merged[section]}
        elif section == "load" and base and section not in merged:
            merged[section] = dict(base)
    return merged


def _dependency_order(
    flows: dict[str, Flow], rel: dict[str, str], invalid: set[str]
) -> tuple[list[str], list[ConfigProblem]]:
    """Topological order of flows by depends_on; problems for unknown names and cycles.
    A dependency on a flow whose own file is invalid is already reported there."""
    problems = []
    for flow in flows.values():
        for i, dep in enumerate(flow.depends_on):
            if dep not in flows and dep not in invalid:
                problems.append(ConfigProblem(rel[flow.flow], f"depends_on[{i}]", f"no flow named {dep!r}"))
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join(trail[trail.index(name):] + [name])
            problems.append(ConfigProblem(rel[name], "depends_on", f"dependency cycle: {cycle}"))
            return
        state[name] = 1
        for dep in flows[name].depends_on:
            if dep in flows:
                visit(dep, trail + [name])
        state[name] = 2
        order.append(name)

    # Master data first, then orders down to the MES, then feedback up to the ERP.
    rank = {"master_data": 0, "erp_to_mes": 1, "mes_to_erp": 2, "warehouse": 3}
    for name in sorted(flows, key=lambda n: (rank.get(flows[n].schedule_group, 9), n)):
        visit(name, [])
    return order, problems


def load_project(mappings_dir: Path | str = DEFAULT_MAPPINGS, expectations_dir: Path | str | None = None) -> Project:
    """Read and validate every flow under ``mappings_dir/flows``, the crosswalks and the flows'
    expectation suites (``expectations_dir``, by default ``expectations/`` beside ``mappings/``).

    Returns the flows in dependency order. Raises ConfigError listing every problem found.
    """
    from etl.config.crosswalks import read_crosswalks  # crosswalk imports config for Side only
    from etl.config.suites import load_suite  # likewise: validation reads Flow

    base = Path(mappings_dir)
    problems: list[ConfigProblem] = []

    defaults = Defaults()
    defaults_path = base / "defaults.yaml"
    if defaults_path.exists():
        raw, errs = read_yaml(defaults_path, display_path(defaults_path))
        problems += errs
        if raw is not None:
            try:
                defaults = Defaults.model_validate(raw)
            except ValidationError as exc:
                problems += problems_from_validation(display_path(defaults_path), exc, Defaults)

    flows: dict[str, Flow] = {}
    rel_of: dict[str, str] = {}
    invalid: set[str] = set()
    flow_files = sorted((base / "flows").glob("*.y*ml"))
    if not flow_files:
        problems.append(ConfigProblem(display_path(base / "flows"), "", "no flow files (*.yaml)"))
    for path in flow_files:
        rel = display_path(path)
        raw, errs = read_yaml(path, rel)
        problems += errs
        if errs:
            invalid.add(path.stem)  # its depends_on readers need no message of their own
            continue
        if not isinstance(raw, dict):
            problems.append(ConfigProblem(rel, "", "expected a mapping of keys at the top level"))
            invalid.add(path.stem)
            continue
        if "file" in raw:
            problems.append(ConfigProblem(rel, "file", unknown_key_message(Flow, ("file",))))
            invalid.add(str(raw.get("flow", path.stem)))
            continue
        try:
            flow = Flow.model_validate({**_merge_defaults(raw, defaults), "file": rel})
        except ValidationError as exc:
            problems += problems_from_validation(rel, exc, Flow)
            invalid.add(str(raw.get("flow", path.stem)))
            continue
        if flow.flow in flows:
            problems.append(ConfigProblem(rel, "flow", f"flow {flow.flow!r} is also defined in {rel_of[flow.flow]}"))
            continue
        if path.stem != flow.flow:
            problems.append(ConfigProblem(rel, "flow", f"flow {flow.flow!r} must live in {flow.flow}.yaml"))
        flows[flow.flow] = flow
        rel_of[flow.flow] = rel

    # A reference to a crosswalk whose own file is broken follows from that file's problem.
    crosswalks, crosswalk_problems, broken_crosswalks = read_crosswalks(base / "crosswalks")
    problems += crosswalk_problems
    translated: set[tuple[str, str]] = set()  # (crosswalk, side) some flow translates codes to
    for flow in flows.values():
        if flow.direction == "mes_to_erp" and flow.source.plant_column is not None:
            translated.add(("plant", "mes"))  # --plants are ERP codes, translated for an MES source
        located = [(f"columns[{i}]", col) for i, col in enumerate(flow.columns)]
        if flow.lines is not None:
            located += [(f"lines.columns[{i}]", col) for i, col in enumerate(flow.lines.columns)]
        for at, col in located:
            side = flow.crosswalk_side(col)
            if side is not None:
                translated.add(side)
            for name, where in crosswalks_used(flow, col):
                if name in broken_crosswalks:
                    continue
                if name not in crosswalks:
                    problems.append(ConfigProblem(flow.file, f"{at}.{where}", f"no crosswalk named {name!r}"))
                elif where == "convert_unit.crosswalk" and crosswalks[name].lookup_spec is not None:
                    # A lookup pairs codes only; converting with it would silently keep the quantity.
                    problems.append(ConfigProblem(
                        flow.file, f"{at}.{where}",
                        f"crosswalk {name!r} is a lookup and has no unit factors; use a CSV crosswalk with a factor column",
                    ))

    # A crosswalk stays one-to-one across its table and its rule in each direction flows use.
    problems += [
        problem for name, crosswalk in sorted(crosswalks.items())
        for to, problem in crosswalk.collisions if (name, to) in translated
    ]

    suites_dir = Path(expectations_dir) if expectations_dir is not None else base.parent / "expectations"
    for flow in flows.values():
        if flow.expectations is not None:
            try:
                load_suite(suites_dir, flow)
            except ConfigError as exc:
                problems += exc.problems

    order, order_problems = _dependency_order(flows, rel_of, invalid)
    problems += order_problems
    reconciliations, reconciliation_problems = _load_reconciliations(base / RECONCILIATIONS_FILE)
    problems += reconciliation_problems
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))  # a suite two flows share: once
    return Project(
        flows={name: flows[name] for name in order},
        defaults=defaults,
        mappings_dir=str(base),
        expectations_dir=str(suites_dir),
        reconciliations=reconciliations,
    )


def _load_reconciliations(path: Path) -> tuple[list[BusinessReconciliation], list[ConfigProblem]]:
    """The business reconciliations declared in ``path``; none when the file does not exist."""
    if not path.exists():
        return [], []
    rel = display_path(path)
    raw, problems = read_yaml(path, rel)
    if problems:
        return [], problems
    try:
        return ReconciliationFile.model_validate(raw or {}).reconciliations, []
    except ValidationError as exc:
        return [], problems_from_validation(rel, exc, ReconciliationFile)

"""Benchmark: the whole pipeline against PostgreSQL's own COPY, side by side, in one run.

    python bench/benchmark.py [--rows 1000000] [--repeats 3] [--pandas-rows 100000] [--skip pandas,gx_sql]

Builds the workload (MES operation confirmations, 14 columns: numeric(18,3) with 18-digit
values, timestamptz with microseconds, Chinese text, empty strings and NULLs) in throwaway
PostgreSQL databases, then times each path in a child process (wall seconds and peak RSS):

  copy          the limit: binary COPY TO STDOUT streamed into COPY FROM STDIN, indexed target
  pandas        read_sql + to_sql, what most scripts do (on --pandas-rows rows)
  full          the engine into an empty target: extract, crosswalks, unit conversion,
                validation, quarantine, upsert, watermark, ledger
  rerun         the same window again (full refresh): must write 0 rows
  incremental   10,000 source rows changed (their cursor moved 6 minutes past every other
                row's, as with a run every 6 minutes), an incremental run. The flow remembers
                the rows its lookback reads again (cursor.skip_loaded); one incremental run
                with nothing changed goes first, untimed, as in a flow that runs every few
                minutes (a full refresh clears what the lookback remembers)
  incremental_compared  the same, without skip_loaded: the lookback's rows compared again
  unchecked     the full run without the flow's expectation suite: what validation costs
  gx_pandas     Great Expectations 1.x itself, the same suite on the loaded table read into a
                pandas frame (validation seconds only; import and read printed apart)
  gx_sql        Great Expectations 1.x on the PostgreSQL table (SQL pushdown), validation only
  mariadb_pipe  the limit from MariaDB: `mariadb --batch --quick` of the same rows piped into psql's COPY
  from_mariadb  the full run from the same rows on MariaDB (naive UTC DATETIME(6)) into PostgreSQL
  postgres_to_mariadb_pipe  the limit into MariaDB: psql's COPY TO STDOUT piped into LOAD DATA LOCAL INFILE
  to_mariadb    the full run from PostgreSQL into the same target table on MariaDB (the rules
                in process: DuckDB over Arrow chunks, the default for a target without the SQL path)
  to_mariadb_python  the same on the Python path (load.transform: python), the path it replaced
  full_in_process  the full run PostgreSQL -> PostgreSQL with the rules in process (forced)
  full_python   the same on the Python path: the in-process path against the pandas one it replaces
  airflow       parse of the whole dags/ folder (Airflow's DagBag, Airflow already imported,
                as in the dag-processor), and a flow task's fixed overhead: the imports it does
                when it runs, reading the project's YAML, opening both connections

Engine children also time each step of the run in process (connect to done), so the table
shows the engine's own seconds next to the wall time of the process, and the validate and
reconcile steps of the full run; and they count the rows each run read and loaded (an
incremental run reads the rows its lookback covers again).

Every engine path is checked row by row against an oracle written in plain SQL on the source
(posting key, order number, work center, unit and quantity conversion): the differing rows
must be 0. Ratios are against the COPY limit measured in the same run; the MariaDB paths are
also put beside their own limit (a plain pipe of the same rows), measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ADMIN_URL = os.environ.get("ETL_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN_URL = os.environ.get("ETL_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql?charset=utf8mb4")
#: The paths that run the engine itself (their steps and row counts are printed).
ENGINE_PATHS = ("full", "unchecked", "rerun", "incremental", "incremental_compared", "from_mariadb", "to_mariadb",
                "to_mariadb_python", "full_in_process", "full_python")
#: Each MariaDB path and the plain pipe it is measured against, and the in-process path against
#: the Python path it replaces.
OWN_LIMITS = {"from_mariadb": "mariadb_pipe", "to_mariadb": "postgres_to_mariadb_pipe",
              "to_mariadb_python": "postgres_to_mariadb_pipe", "full_python": "full_in_process"}
#: Where the rules run on the paths that choose it (the rest take the flow's auto).
TRANSFORMS = {"to_mariadb_python": "python", "full_in_process": "in_process", "full_python": "python"}

#: The oracle: what each target row must be, computed from the source in SQL alone.
ORACLE = """
SELECT 'MES-OPR-' || report_no,
       concat_ws('|', '1' || substr(wo_no, 9), lpad(step_no::text, 4, '0'),
           CASE equipment_code WHEN 'EQ-SH01-CUT-01' THEN 'WC-CUT1' WHEN 'EQ-SH01-WLD-01' THEN 'WC-WLD1'
               WHEN 'EQ-SH01-MIX-01' THEN 'WC-MIX1' WHEN 'EQ-SH01-ASM-01' THEN 'WC-ASM1'
               WHEN 'EQ-SH01-PKG-01' THEN 'WC-PKG1' WHEN 'EQ-SZ01-CUT-01' THEN 'WC-CUT2'
               WHEN 'EQ-SZ01-ASM-01' THEN 'WC-ASM2' WHEN 'EQ-SZ01-PKG-01' THEN 'WC-PKG2' END,
           round(good_qty * CASE unit WHEN 'g' THEN 0.001 ELSE 1 END, 6)::text,
           round(scrap_qty * CASE unit WHEN 'g' THEN 0.001 ELSE 1 END, 6)::text,
           CASE unit WHEN 'g' THEN 'KG' WHEN 'kg' THEN 'KG' WHEN 'pcs' THEN 'PC' WHEN 'm' THEN 'M' END,
           coalesce(scrap_reason, '<NULL>'), coalesce(operator_name, '<NULL>'),
           to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
           to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
           coalesce(remark, '<NULL>'), to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'))
FROM op_confirmation ORDER BY 1
"""
LOADED = """
SELECT posting_key,
       concat_ws('|', order_no, operation_no, work_center, yield_qty::text, scrap_qty::text, unit,
           coalesce(scrap_reason, '<NULL>'), coalesce(operator_name, '<NULL>'),
           to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
           to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
           coalesce(remark, '<NULL>'), to_char(source_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'))
FROM confirmation_in ORDER BY 1
"""
#: LOADED on a MariaDB target, whose timestamps are the naive UTC values.
LOADED_MARIADB = """
SELECT posting_key,
       concat_ws('|', order_no, operation_no, work_center, yield_qty, scrap_qty, unit,
           coalesce(scrap_reason, '<NULL>'), coalesce(operator_name, '<NULL>'),
           date_format(start_time, '%Y-%m-%d %H:%i:%s.%f'), date_format(end_time, '%Y-%m-%d %H:%i:%s.%f'),
           coalesce(remark, '<NULL>'), date_format(source_updated_at, '%Y-%m-%d %H:%i:%s.%f'))
FROM confirmation_in ORDER BY posting_key COLLATE utf8mb4_bin
"""


def run_sql(url: URL, sql: str) -> None:
    """Run a script of statements on ``url`` (plain driver execution: % and : stay literal)."""
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        raw.cursor().execute(sql)
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def run_mariadb_sql(url: URL, sql: str) -> None:
    """Run a script of statements on MariaDB, one at a time (plain driver execution: % stays literal)."""
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement in sql.split(";\n"):
            body = "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--")).strip()
            if body:
                cursor.execute(body)
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def differing_rows(source: URL, target: URL) -> int:
    """Rows whose loaded content differs from the oracle, plus rows missing on either side."""
    engines = [create_engine(source), create_engine(target)]
    loaded_sql = LOADED_MARIADB if target.get_backend_name() == "mysql" else LOADED
    try:
        with engines[0].connect() as a, engines[1].connect() as b:
            expected = a.execution_options(stream_results=True, yield_per=50_000).execute(text(ORACLE))
            loaded = b.execution_options(stream_results=True, yield_per=50_000).execute(text(loaded_sql))
            differ = 0
            left, right = next(expected, None), next(loaded, None)
            while left is not None or right is not None:
                if right is None or (left is not None and left[0] < right[0]):
                    differ, left = differ + 1, next(expected, None)
                elif left is None or right[0] < left[0]:
                    differ, right = differ + 1, next(loaded, None)
                else:
                    if left[1] != right[1]:
                        differ += 1
                        if differ <= 3:  # what differs, for the one reading the figures
                            print(f"differs: {left[0]}: expected {left[1]!r}, loaded {right[1]!r}", file=sys.stderr)
                    left, right = next(expected, None), next(loaded, None)
            return differ
    finally:
        for engine in engines:
            engine.dispose()


def child(path: str, src: str, dst: str) -> None:
    """One measured path, in its own process so its peak memory is its own."""
    if path == "copy":
        engines = [create_engine(src), create_engine(dst)]
        source, target = (e.raw_connection() for e in engines)
        import threading

        read_fd, write_fd = os.pipe()
        reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")

        def produce() -> None:
            with writer:
                source.cursor().copy_expert("COPY op_confirmation TO STDOUT (FORMAT binary)", writer)

        thread = threading.Thread(target=produce)
        thread.start()
        target.cursor().copy_expert("COPY op_confirmation_copy FROM STDIN (FORMAT binary)", reader)
        thread.join()
        target.commit()
        return
    if path in ("mariadb_pipe", "postgres_to_mariadb_pipe"):
        _pipe(path, make_url(src), make_url(dst))
        return
    if path == "pandas":
        import pandas as pd

        limit = int(os.environ["BENCH_PANDAS_ROWS"])
        frame = pd.read_sql(f"SELECT * FROM op_confirmation ORDER BY confirmation_id LIMIT {limit}", create_engine(src))
        frame.to_sql("op_confirmation_pandas", create_engine(dst), if_exists="append", index=False, chunksize=10_000)
        return
    if path in ("gx_pandas", "gx_sql"):
        _record(great_expectations_cost(path, dst))
        return
    if path == "airflow":
        _record(airflow_cost(src, dst))
        return
    sys.path.insert(0, str(REPO))
    from etl.config.project import load_project
    from etl.sync.connections import Connections
    from etl.sync.runner import RunOptions, run_flow

    project = load_project(HERE / "mappings")
    name = "confirmations_bench_mariadb" if path == "from_mariadb" else "confirmations_bench"
    flow = project.flows[name]
    if path == "unchecked":
        flow = flow.model_copy(update={"expectations": None})
    if path in ("incremental_compared", "to_mariadb", *TRANSFORMS):  # only the SQL path keeps a lookback memory
        assert flow.cursor is not None
        flow = flow.model_copy(update={"cursor": flow.cursor.model_copy(update={"skip_loaded": False})})
    if path in TRANSFORMS:
        flow = flow.model_copy(update={"load": flow.load.model_copy(update={"transform": TRANSFORMS[path]})})
    project = project.model_copy(update={"flows": {name: flow}})
    options = RunOptions(full_refresh=path == "rerun")
    marks: list[tuple[str, float]] = []
    urls = {"bench_source": src, "bench_source_mariadb": src, "bench_target": dst}
    with Connections(urls) as connections:
        result = run_flow(project, name, connections, options,
                          hook=lambda step: marks.append((step, time.perf_counter())))
    counts = result.record.counts
    steps: dict[str, float] = {}
    for (step, at), (_, until) in zip(marks, marks[1:], strict=False):
        steps[step] = steps.get(step, 0.0) + until - at
    steps["engine"] = marks[-1][1] - marks[0][1]
    # Counts beside the seconds: an incremental run reads more rows than changed (its lookback).
    steps.update({"rows_read": counts.rows_read, "rows_loaded": counts.rows_loaded, "rows_unchanged": counts.rows_unchanged,
                  "rows_set_aside": result.record.options.get("rows_set_aside", 0)})
    _record(steps)
    print(f"loaded={counts.rows_loaded} read={counts.rows_read} quarantined={counts.rows_quarantined}", file=sys.stderr)


def _pipe(path: str, src: URL, dst: URL) -> None:
    """A plain pipe of the workload's rows between the command-line clients, no checks: the
    limit a MariaDB path is measured against."""
    columns = ("confirmation_id, report_no, wo_no, step_no, equipment_code, good_qty, scrap_qty, unit, scrap_reason, "
               "operator_name, start_time, end_time, remark, updated_at")
    if path == "mariadb_pipe":
        out = ["mariadb", f"--host={src.host}", f"--port={src.port or 3306}", f"--user={src.username}",
               "--batch", "--quick", "--skip-column-names", "--default-character-set=utf8mb4", src.database or "",
               "--execute", f"SELECT {columns} FROM op_confirmation"]
        into = ["psql", "--quiet", f"--host={dst.host}", f"--port={dst.port or 5432}", f"--username={dst.username}",
                f"--dbname={dst.database}", "--command", "COPY op_confirmation_copy FROM STDIN (NULL 'NULL')"]
    else:
        out = ["psql", "--quiet", f"--host={src.host}", f"--port={src.port or 5432}", f"--username={src.username}",
               f"--dbname={src.database}", "--command", f"COPY (SELECT {columns} FROM op_confirmation) TO STDOUT"]
        into = ["mariadb", f"--host={dst.host}", f"--port={dst.port or 3306}", f"--user={dst.username}",
                "--local-infile=1", "--default-character-set=utf8mb4", dst.database or "", "--execute",
                "LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE op_confirmation_copy CHARACTER SET utf8mb4"]
    postgres, mariadb = (dst, src) if path == "mariadb_pipe" else (src, dst)
    # Passwords reach the clients through their own variables, never the command line.
    env = {**os.environ, "PGPASSWORD": postgres.password or "", "MYSQL_PWD": mariadb.password or ""}
    producer = subprocess.Popen(out, stdout=subprocess.PIPE, env=env)
    consumer = subprocess.run(into, stdin=producer.stdout, env=env, check=False)
    assert producer.stdout is not None
    producer.stdout.close()
    if producer.wait() != 0 or consumer.returncode != 0:
        raise SystemExit(f"{path}: the pipe failed")


def _record(figures: dict[str, float]) -> None:
    """Hand in-process figures to the parent (the file named by BENCH_FIGURES)."""
    Path(os.environ["BENCH_FIGURES"]).write_text(json.dumps(figures))


def great_expectations_cost(path: str, dst: str) -> dict[str, float]:
    """GX 1.x running the flow's own suite on the loaded table: in pandas or pushed down to SQL."""
    started = time.perf_counter()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    imported = time.perf_counter() - started
    suite = gx.ExpectationSuite(**json.loads((HERE / "expectations" / "confirmations_bench.json").read_text()))
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # they would fill the terminal
    figures = {"import": imported}
    if path == "gx_pandas":
        import pandas as pd

        started = time.perf_counter()
        frame = pd.read_sql("SELECT * FROM confirmation_in", create_engine(dst))
        figures["read"] = time.perf_counter() - started
        batch = (context.data_sources.add_pandas("bench").add_dataframe_asset("confirmation_in")
                 .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame}))
    else:
        batch = (context.data_sources.add_postgres("bench", connection_string=dst)
                 .add_table_asset("confirmation_in", table_name="confirmation_in")
                 .add_batch_definition_whole_table("all").get_batch())
    started = time.perf_counter()
    result = batch.validate(suite, result_format={"result_format": "SUMMARY"})
    figures["validate"] = time.perf_counter() - started
    if not result.success:
        raise SystemExit(f"{path}: GX reports failures on the loaded table")
    return figures


def airflow_cost(src: str, dst: str) -> dict[str, float]:
    """Seconds to parse dags/ and a flow task's fixed overhead before it reads a row."""
    import tempfile

    sys.path.insert(0, str(REPO))
    from demo.airflow_runs import airflow_environment

    with tempfile.TemporaryDirectory(prefix="ems_bench_airflow_") as home:
        os.environ.update(airflow_environment(Path(home)))
        started = time.perf_counter()
        from airflow.dag_processing.dagbag import DagBag

        figures = {"import": time.perf_counter() - started}
        started = time.perf_counter()
        bag = DagBag(dag_folder=str(REPO / "dags"))
        figures["parse"] = time.perf_counter() - started
        if bag.import_errors or not bag.dags:
            raise SystemExit(f"airflow: dags/ did not parse: {bag.import_errors}")
        figures["dags"] = len(bag.dags)
        # What etl.airflow.dag_factory.sync_flow does before run_flow reads anything.
        started = time.perf_counter()
        from etl.config.project import load_project
        from etl.sync.connections import Connections

        importlib.import_module("etl.sync.runner")  # the task imports it to run the flow

        figures["task_imports"] = time.perf_counter() - started
        started = time.perf_counter()
        load_project(REPO / "mappings")
        figures["task_config"] = time.perf_counter() - started
        started = time.perf_counter()
        with Connections({"bench_source": src, "bench_target": dst}) as connections:
            for name in ("bench_source", "bench_target"):
                with connections.engine(name).connect() as conn:
                    conn.execute(text("SELECT 1"))
        figures["task_connections"] = time.perf_counter() - started
    figures["task_fixed"] = figures["task_imports"] + figures["task_config"] + figures["task_connections"]
    return figures


FIGURES: dict[str, list[dict[str, float]]] = {}

Result = tuple[str, int, list[float], list[float], "int | None"]


def mariadb_paths(
    rows: int, repeats: int, src: URL, dst: URL, env: dict[str, str], target_ddl: str, copy_ddl: str,
    skipped: set[str],
) -> list[Result]:
    """MariaDB -> PostgreSQL and PostgreSQL -> MariaDB on the same rows, each beside its plain pipe;
    the loaded rows are checked against the oracle on the PostgreSQL source."""
    admin = create_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = {k: f"ems_bench_{k}_{uuid.uuid4().hex[:6]}" for k in ("msrc", "mdst")}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    msrc, mdst = (make_url(MARIADB_ADMIN_URL).set(database=names[k]) for k in ("msrc", "mdst"))
    workload = (HERE / "workload_mariadb.sql").read_text()
    table_ddl = workload[workload.index("CREATE TABLE"):workload.index("utf8mb4;") + len("utf8mb4;")]
    fresh = "".join(f"DROP TABLE IF EXISTS {t};\n" for t in ("confirmation_in", "etl_watermark", "etl_ledger", "etl_quarantine"))
    out: list[Result] = []

    def timed(path: str, source: URL, target: URL, before: str, check: bool) -> None:
        times, rss = [], []
        for _ in range(repeats):
            (run_mariadb_sql if target.get_backend_name() == "mysql" else run_sql)(target, before)
            t, m = measure(path, source, target, env)
            times.append(t)
            rss.append(m)
        out.append((path, rows, times, rss, differing_rows(src, target) if check else None))

    try:
        started = time.perf_counter()
        run_mariadb_sql(msrc, workload.replace(":rows", str(rows)))
        print(f"workload on MariaDB: {rows:,} rows built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        timed("mariadb_pipe", msrc, dst, "DROP TABLE IF EXISTS op_confirmation_copy;" + copy_ddl, False)
        timed("from_mariadb", msrc, dst, fresh + target_ddl, True)
        timed("postgres_to_mariadb_pipe", src, mdst, "DROP TABLE IF EXISTS op_confirmation_copy;\n"
              + table_ddl.replace("op_confirmation", "op_confirmation_copy"), False)
        timed("to_mariadb", src, mdst, fresh + target_ddl.replace("TIMESTAMPTZ", "DATETIME(6)"), True)
        if "to_mariadb_python" not in skipped:
            timed("to_mariadb_python", src, mdst, fresh + target_ddl.replace("TIMESTAMPTZ", "DATETIME(6)"), True)
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()
    return out


def measure(path: str, src: URL, dst: URL, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child run; its in-process figures go to FIGURES."""
    figures_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"ems_bench_{uuid.uuid4().hex}.json"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", path, "--src", src.render_as_string(False), "--dst", dst.render_as_string(False)],
        env={**os.environ, **env, "BENCH_FIGURES": str(figures_file)},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"path {path} failed with status {status}")
    if figures_file.exists():
        FIGURES.setdefault(path, []).append(json.loads(figures_file.read_text()))
        figures_file.unlink()
    return elapsed, usage.ru_maxrss / 1024


def _median_figure(path: str, name: str) -> float | None:
    values = [f[name] for f in FIGURES.get(path, []) if name in f]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pandas-rows", type=int, default=100_000)
    parser.add_argument("--skip", default="", help="comma-separated optional paths to leave out "
                        "(pandas, rerun, gx_pandas, gx_sql, unchecked, airflow, mariadb, full_in_process, full_python, "
                        "to_mariadb_python), e.g. for a 5M-row run")
    parser.add_argument("--child")
    parser.add_argument("--src")
    parser.add_argument("--dst")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.src, args.dst)
        return

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    # mdst: the MariaDB paths' own PostgreSQL target, so the incremental runs find dst as they left it.
    names = {k: f"ems_bench_{k}_{uuid.uuid4().hex[:6]}" for k in ("src", "dst", "mdst")}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    src, dst, mariadb_dst = (make_url(ADMIN_URL).set(database=names[k]) for k in ("src", "dst", "mdst"))
    results: list[Result] = []
    try:
        started = time.perf_counter()
        run_sql(src, (HERE / "workload.sql").read_text().replace(":rows", str(args.rows)))
        print(f"workload: {args.rows:,} rows built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        env = {"BENCH_PANDAS_ROWS": str(min(args.pandas_rows, args.rows))}

        skipped = {p.strip() for p in args.skip.split(",") if p.strip()}

        def repeat(path: str, rows: int, before: str | None = None, check: bool = False) -> None:
            """Time ``path`` --repeats times, running ``before`` on the target database first."""
            if path in skipped:
                return
            times, rss = [], []
            differ = None
            for _ in range(args.repeats):
                if before:
                    run_sql(dst, before)
                t, m = measure(path, src, dst, env)
                times.append(t)
                rss.append(m)
            if check:
                differ = differing_rows(src, dst)
            results.append((path, rows, times, rss, differ))

        target_ddl = (HERE / "target.sql").read_text()
        workload = (HERE / "workload.sql").read_text()
        source_ddl = workload[workload.index("CREATE TABLE"):workload.index(");") + 2]
        repeat("copy", args.rows, "DROP TABLE IF EXISTS op_confirmation_copy;"
               + source_ddl.replace("op_confirmation", "op_confirmation_copy"))
        repeat("pandas", int(env["BENCH_PANDAS_ROWS"]), "DROP TABLE IF EXISTS op_confirmation_pandas;")
        repeat("full", args.rows, "DROP TABLE IF EXISTS confirmation_in; DROP TABLE IF EXISTS etl_watermark; "
               "DROP TABLE IF EXISTS etl_ledger; DROP TABLE IF EXISTS etl_quarantine;" + target_ddl, check=True)
        # Right after the full run, on the same machine state: the difference is what validation costs.
        repeat("unchecked", args.rows, "TRUNCATE confirmation_in; TRUNCATE etl_watermark; TRUNCATE etl_ledger; "
               "TRUNCATE etl_quarantine; TRUNCATE etl_check;", check=True)
        repeat("rerun", args.rows, check=True)
        fresh = ("DROP TABLE IF EXISTS confirmation_in; DROP TABLE IF EXISTS etl_watermark; DROP TABLE IF EXISTS etl_ledger; "
                 "DROP TABLE IF EXISTS etl_quarantine; DROP TABLE IF EXISTS etl_lookback_loaded;")
        repeat("full_in_process", args.rows, fresh + target_ddl, check=True)
        repeat("full_python", args.rows, fresh + target_ddl, check=True)
        repeat("gx_pandas", args.rows)
        repeat("gx_sql", args.rows)
        # Before the incremental runs change the source: the MariaDB copy holds the same rows.
        if "mariadb" not in skipped:
            copy_ddl = source_ddl.replace("op_confirmation", "op_confirmation_copy")
            results += mariadb_paths(args.rows, args.repeats, src, mariadb_dst, env, target_ddl, copy_ddl, skipped)
        # As an MES writes: a changed row's cursor moves past every other row's, here 6 minutes
        # on, as if a run came every 6 minutes. The 10-minute lookback then reads the batches of
        # the last two runs again beside the 10,000 rows just changed.
        changed = ("UPDATE op_confirmation SET good_qty = good_qty + 1, "
                   "updated_at = (SELECT max(updated_at) FROM op_confirmation) + interval '6 minutes' "
                   "WHERE confirmation_id IN (SELECT confirmation_id FROM op_confirmation ORDER BY confirmation_id "
                   "DESC LIMIT 10000 OFFSET {offset})")
        measure("settle", src, dst, env)  # an incremental run after the rerun: nothing changed
        for number, path in enumerate(("incremental", "incremental_compared")):
            times, rss = [], []
            for i in range(args.repeats):
                run_sql(src, changed.format(offset=(number * args.repeats + i) * 10_000))
                t, m = measure(path, src, dst, env)
                times.append(t)
                rss.append(m)
            results.append((path, 10_000, times, rss, differing_rows(src, dst)))
        if "airflow" not in skipped:
            for _ in range(args.repeats):
                measure("airflow", src, dst, env)
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    limit = statistics.median(results[0][2])
    print(f"\n{'path':<26}{'rows':>11}{'median s':>10}{'engine s':>10}{'rows/s':>12}{'× COPY':>8}{'peak RSS MB':>13}{'differing':>11}")
    for path, rows, times, rss, differ in results:
        median = statistics.median(times)
        # GX rows: the validation call alone; engine rows: the run inside the process.
        inner = _median_figure(path, "engine") or _median_figure(path, "validate")
        print(f"{path:<26}{rows:>11,}{median:>10.2f}{'' if inner is None else f'{inner:.2f}':>10}{rows / median:>12,.0f}"
              f"{median / limit:>8.2f}{max(rss):>13.0f}{'' if differ is None else differ:>11}")
    medians = {path: statistics.median(times) for path, _, times, _, _ in results}
    for path, limit_path in OWN_LIMITS.items():
        if path in medians and limit_path in medians:
            print(f"{path}: {medians[path]:.2f} s against its plain pipe's {medians[limit_path]:.2f} s: "
                  f"{medians[path] / medians[limit_path]:.2f}x")
    validate, reconcile = _median_figure("full", "validate"), _median_figure("full", "reconcile")
    full_engine, unchecked = _median_figure("full", "engine"), _median_figure("unchecked", "engine")
    if validate is not None and full_engine:
        # The validate step against the rest of the same runs: comparing the full and unchecked
        # medians instead mixes in the run-to-run spread, which is larger than validation here.
        print(f"\nfull run, in process: validate {validate:.2f} s (adds {validate / (full_engine - validate):.0%} to the "
              f"rest of the engine's {full_engine:.2f} s), reconcile {reconcile or 0:.2f} s"
              + (f"; the runs without the suite took {unchecked:.2f} s" if unchecked else ""))
    print("\nengine steps, in process (medians, seconds; steps under 0.1 s left out):")
    for path in ENGINE_PATHS:
        if FIGURES.get(path):
            names = [k for k in FIGURES[path][0]
                     if k != "engine" and not k.startswith("rows_") and (_median_figure(path, k) or 0) >= 0.1]
            print(f"  {path:<21}" + ", ".join(f"{k} {_median_figure(path, k):.2f}" for k in names))
    print("rows per run, in process (medians): " + "; ".join(
        f"{path} read {_median_figure(path, 'rows_read'):,.0f}, loaded {_median_figure(path, 'rows_loaded'):,.0f}, "
        f"unchanged {_median_figure(path, 'rows_unchanged'):,.0f} (set aside {_median_figure(path, 'rows_set_aside'):,.0f})"
        for path in ENGINE_PATHS if _median_figure(path, "rows_read") is not None))
    for path in ("gx_pandas", "gx_sql"):
        if FIGURES.get(path):
            parts = ", ".join(f"{k} {_median_figure(path, k):.2f} s" for k in ("import", "read", "validate")
                              if _median_figure(path, k) is not None)
            print(f"{path}: {parts}")
    if FIGURES.get("airflow"):
        a = {k: _median_figure("airflow", k) or 0.0 for k in FIGURES["airflow"][0]}
        print(f"airflow: parse of dags/ {a['parse']:.2f} s for {a['dags']:.0f} DAGs (after importing Airflow, "
              f"{a['import']:.2f} s); a flow task's fixed overhead {a['task_fixed']:.2f} s (its imports "
              f"{a['task_imports']:.2f}, the project's YAML {a['task_config']:.2f}, both connections {a['task_connections']:.2f})")
    print(f"\n{args.repeats} repeats each (medians); min-max seconds: " +
          "; ".join(f"{p}: {min(t):.2f}-{max(t):.2f}" for p, _, t, _, _ in results))


if __name__ == "__main__":
    main()

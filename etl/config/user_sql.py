"""The plant's own SQL (suite queries, business reconciliations): exactly one statement that
only reads, or a reason why not.

Parsing is the first of two guards: each query then runs where the database refuses writes
(``Dialect.read_only``). The parse catches what a read-only transaction cannot: a second
statement (``...; COMMIT; DELETE ...`` would end the read-only transaction and write after it),
row locks, ``SELECT ... INTO``, and functions with side effects outside the data (advisory
locks, sequences, other sessions). MariaDB has no way to make a transaction read-only once it
has written, so there the parse also refuses functions it does not know as built-ins: a stored
function may write.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

#: sqlglot's name for each SQLAlchemy dialect the pipeline runs on; without a dialect, the query
#: must pass in each of them that can parse it.
_SQLGLOT = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite", "mssql": "tsql"}
_ANY = ("postgres", "mysql", "sqlite")

_WRITES: tuple[type[exp.Expr], ...] = (
    exp.Into, exp.Lock, exp.Delete, exp.Insert, exp.Update, exp.Merge, exp.Create, exp.Drop, exp.Alter,
    exp.Command, exp.Set, exp.Transaction, exp.Commit, exp.Rollback, exp.Copy, exp.LoadData, exp.Pragma,
    exp.TruncateTable, exp.Use, exp.Grant, exp.Revoke, exp.Analyze, exp.Execute, exp.Kill,
)

#: Functions that act outside the rows read: locks (one would free the run's own), sequences,
#: other sessions, files, notifications, settings, sleeps.
_SIDE_EFFECTS = re.compile(
    r"(get_lock|release_lock|release_all_locks|is_free_lock|is_used_lock|sleep|benchmark|load_file"
    r"|nextval|setval|lastval|currval|set_config|pg_sleep\w*|pg_(try_)?advisory\w*|pg_terminate_backend"
    r"|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile|pg_notify|pg_switch_wal|pg_create\w*|pg_drop\w*"
    r"|pg_replication\w*|pg_read\w*|pg_write\w*|pg_file\w*|pg_ls\w*|pg_stat_reset\w*|lo_\w+|dblink\w*"
    r"|load_extension|writefile|readfile|txid_current|pg_current_xact_id)",
    re.IGNORECASE,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read_only_problem(sql: str, dialect: str | None = None) -> str | None:
    """Why ``sql`` is not exactly one statement that only reads, in ``dialect`` (a SQLAlchemy
    dialect name; None: in every dialect that can parse it), or None when it is."""
    names = (_SQLGLOT[dialect],) if dialect in _SQLGLOT else _ANY if dialect is None else (dialect,)
    parse_errors = []
    parsed_somewhere = False
    for name in names:
        try:
            statements = [s for s in sqlglot.parse(sql, read=name) if s is not None]
        except SqlglotError as exc:
            parse_errors.append(f"{name}: {_ANSI.sub('', str(exc)).splitlines()[0]}")
            continue
        parsed_somewhere = True
        problem = _statement_problem(statements, strict_functions=name == "mysql" and dialect is not None)
        if problem is not None:
            return problem
    if not parsed_somewhere:
        return "it does not parse as SQL, so it cannot be shown to only read (" + "; ".join(parse_errors) + ")"
    return None


def _statement_problem(statements: list[exp.Expr], strict_functions: bool) -> str | None:
    if len(statements) != 1:
        return f"it holds {len(statements)} statements; exactly one SELECT is allowed (no ';' between statements)"
    statement = statements[0]
    if not isinstance(statement, (exp.Query, exp.Values)):
        return f"it is a {statement.key.upper()} statement, not a SELECT"
    for node in statement.walk():
        if isinstance(node, _WRITES):
            what = "SELECT ... INTO" if isinstance(node, exp.Into) else "a row lock (FOR UPDATE / SHARE)" \
                if isinstance(node, exp.Lock) else node.key.upper()
            return f"it contains {what}; only reading is allowed"
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if _SIDE_EFFECTS.fullmatch(name or ""):
                return f"it calls {name}(), which acts outside the rows it reads"
            if strict_functions and isinstance(node, exp.Anonymous):
                return (f"it calls {name}(), which is not a built-in function; on MariaDB the query runs "
                        "inside the run's transaction, where a stored function could write")
    return None

"""Airflow DAGs of erp-mes-sync: one DAG per flow file under mappings/flows/.

Thin on purpose: etl.airflow.dag_factory reads the YAML and builds the DAGs; nothing here touches a
database. The `etl` package must be importable (PYTHONPATH=<repo>, as `make airflow` sets it, or
the installed package); ETL_MAPPINGS_DIR names the flows' folder (docs/installing-as-a-package.md).
"""

from etl.airflow.dag_factory import build_dags

globals().update(build_dags())

"""Airflow 3: the DAGs built from the flows and the tasks they run."""

"""The column rules and the backends they run on: in Python (transform) and in PostgreSQL (sql)."""

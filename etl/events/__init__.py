"""Event-driven runs: the listeners that hear an MES commit (PostgreSQL NOTIFY, MQTT) and the
watch loop (``python -m etl watch``) that answers them with the same run as every other run.
An event only wakes a run; the watermark decides what it reads."""

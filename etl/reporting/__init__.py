"""What people read: the data-quality report, the dashboard and its charts, Data Docs, alerts and mail."""

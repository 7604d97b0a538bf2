-- Optional, for the MES database's DBA: wakes an event-driven erp-mes-sync flow the moment rows
-- of an MES table commit (flow YAML: trigger: {on: {postgres_notify: {channel: ...}}}).
-- One notification per statement, not per row, sent by PostgreSQL at COMMIT only (a rolled-back
-- transaction notifies nobody); its payload is empty on purpose: the flow reads from its
-- watermark, never from the event. Costs the MES transaction one pg_notify call per statement.
-- Installed once per table; remove with DROP TRIGGER ... ON <table>.

CREATE OR REPLACE FUNCTION erp_mes_sync_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV[0]: the channel named in the flow's trigger.
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
$$;

-- The confirmations flow's MES table (sql/demo/mes.sql): channel operation_report_changed.
DROP TRIGGER IF EXISTS operation_report_notify ON operation_report;
CREATE TRIGGER operation_report_notify
    AFTER INSERT OR UPDATE ON operation_report
    FOR EACH STATEMENT EXECUTE FUNCTION erp_mes_sync_notify('operation_report_changed');

-- Least-privilege roles for erp-mes-sync on PostgreSQL.
--
-- Four group roles (NOLOGIN), one per database and direction:
--   ems_erp_extract  SELECT on the ERP tables the ERP -> MES flows read. Nothing else.
--   ems_mes_load     writes the MES tables those flows load, and the pipeline's own tables
--                    (etl_watermark, etl_ledger, etl_quarantine, etl_check, etl_lookback_loaded,
--                    etl_file_intake, etl_api_posting, etl_file_export)
--                    on the MES.
--   ems_mes_extract  SELECT on the MES tables the MES -> ERP flows read. Nothing else.
--   ems_erp_load     writes the ERP interface tables (if_*) and the pipeline's own tables on the
--                    ERP; reads production_order, the parent the feedback flows wait for.
-- No role may create, alter or drop a table, and no role may DELETE a synced row: the flows
-- soft-delete (an UPDATE). A flow with `deletes: {action: delete}` or `load: {mode:
-- snapshot_replace}` needs DELETE on its target table as well: grant it for that table only.
-- The load roles need TEMPORARY on their database: a run stages its rows in a temporary table
-- (COPY on PostgreSQL), dropped when the run commits. PostgreSQL grants PUBLIC CONNECT and
-- TEMPORARY on every database by default; the grants below keep working where a DBA revoked
-- them. On PostgreSQL 14 and older also run REVOKE CREATE ON SCHEMA public FROM PUBLIC (15 does
-- it by default), or every role may create tables there.
--
-- How to use it: as the owner of the tables (or a superuser), run this file on EACH database,
-- ERP and MES, after their tables and sql/pipeline/postgresql.sql exist:
--     psql -d erp -f sql/roles/postgresql.sql
--     psql -d mes -f sql/roles/postgresql.sql
-- A grant is made only where its table exists in the database at hand, so one file serves both.
-- Then create the logins the connections use, each in the role it needs, e.g.
--     CREATE ROLE sync_erp_read  LOGIN PASSWORD '...' IN ROLE ems_erp_extract;
--     CREATE ROLE sync_mes_write LOGIN PASSWORD '...' IN ROLE ems_mes_load;
-- and give each its own connection id (flows name a connection per side: the ERP -> MES flows
-- read `erp_db`, the MES -> ERP flows write `erp_db` too; to keep reading and writing apart, point
-- those flows' `target.connection` at a second id such as `erp_interface_db`, or give one login
-- both roles). Passwords go in the Airflow connection, never in this file or the YAML.
-- Re-running the file is harmless. tests/reliability/test_security.py runs it and proves each
-- role can do its flows' work and nothing more.

-- The roles (CREATE ROLE has no IF NOT EXISTS).
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['ems_erp_extract', 'ems_erp_load', 'ems_mes_extract', 'ems_mes_load'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        EXCEPTION WHEN duplicate_object THEN
            NULL;
        END;
    END LOOP;
END
$$;

-- grant_read(role, tables): SELECT on those of `tables` that exist in this database and, if
-- any do, CONNECT to it. Lives in pg_temp: it disappears with this session.
CREATE OR REPLACE FUNCTION pg_temp.grant_read(grantee text, tables text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    name text;
    present text[] := ARRAY(SELECT t FROM unnest(tables) AS t WHERE to_regclass(format('public.%I', t)) IS NOT NULL);
BEGIN
    IF cardinality(present) = 0 THEN
        RETURN;
    END IF;
    FOREACH name IN ARRAY present LOOP
        EXECUTE format('GRANT SELECT ON TABLE public.%I TO %I', name, grantee);
    END LOOP;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), grantee);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', grantee);
END
$$;

-- grant_load(role, targets): if this database holds the flows' target tables, SELECT, INSERT
-- and UPDATE on them (SELECT because the upsert compares the stored row: ON CONFLICT ... WHERE),
-- the pipeline's own tables (the watermark moves and may be reset by hand, the ledger and the
-- check results only grow, quarantine entries are written, released and purged after the retention period),
-- and CONNECT and TEMPORARY on the database.
CREATE OR REPLACE FUNCTION pg_temp.grant_load(grantee text, targets text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    name text;
    present text[] := ARRAY(SELECT t FROM unnest(targets) AS t WHERE to_regclass(format('public.%I', t)) IS NOT NULL);
BEGIN
    IF cardinality(present) = 0 THEN
        RETURN;
    END IF;
    IF to_regclass('public.etl_quarantine') IS NULL THEN
        RAISE EXCEPTION 'create the pipeline tables first (sql/pipeline/postgresql.sql), then run this file';
    END IF;
    FOREACH name IN ARRAY present LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON TABLE public.%I TO %I', name, grantee);
    END LOOP;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.etl_watermark, public.etl_quarantine TO %I', grantee);
    -- Only flows with cursor.skip_loaded use it; a target set up before it existed may lack it.
    IF to_regclass('public.etl_lookback_loaded') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT, INSERT, DELETE ON TABLE public.etl_lookback_loaded TO %I', grantee);
    END IF;
    -- Only flows reading files use it.
    IF to_regclass('public.etl_file_intake') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT, INSERT ON TABLE public.etl_file_intake TO %I', grantee);
    END IF;
    -- Only flows with a web API target use it.
    IF to_regclass('public.etl_api_posting') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT, INSERT, DELETE ON TABLE public.etl_api_posting TO %I', grantee);
    END IF;
    -- Only flows with a file target use it.
    IF to_regclass('public.etl_file_export') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT, INSERT ON TABLE public.etl_file_export TO %I', grantee);
    END IF;
    EXECUTE format('GRANT SELECT, INSERT ON TABLE public.etl_ledger, public.etl_check TO %I', grantee);
    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO %I', pg_get_serial_sequence('public.etl_quarantine', 'id'), grantee);
    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO %I', pg_get_serial_sequence('public.etl_check', 'id'), grantee);
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), grantee);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', grantee);
END
$$;

-- ERP -> MES: read master data and orders in the ERP ...
SELECT pg_temp.grant_read('ems_erp_extract', ARRAY[
    'material', 'bom_item', 'work_center', 'routing_operation', 'employee', 'production_order', 'order_component']);

-- ... and write items, BOMs, equipment, routes, operators, work orders and their components
-- into the MES.
SELECT pg_temp.grant_load('ems_mes_load', ARRAY[
    'item', 'item_bom', 'equipment', 'route_step', 'operator', 'work_order', 'work_order_component']);

-- MES -> ERP: read operation reports, inspections, material issues and receipts in the MES ...
SELECT pg_temp.grant_read('ems_mes_extract', ARRAY['operation_report', 'quality_inspection', 'material_issue', 'fg_receipt']);

-- ... and post them into the ERP's inbound interface tables (the ERP posts stock and cost
-- itself); a report waits until its production order is in the ERP, hence reading that table.
SELECT pg_temp.grant_load('ems_erp_load', ARRAY['if_confirmation', 'if_goods_movement', 'if_quality_result']);
SELECT pg_temp.grant_read('ems_erp_load', ARRAY['production_order']);

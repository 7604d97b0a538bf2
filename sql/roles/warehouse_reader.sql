-- warehouse_reader: a read-only login for BI tools (FineReport, Superset, Metabase) on the
-- reporting warehouse (PostgreSQL).
-- Run once in the warehouse database, as its owner or a superuser, after the first
-- `python -m etl warehouse build`:
--   psql -d warehouse -v reader_password='…' -f sql/roles/warehouse_reader.sql
-- It may read the dimensions, facts and KPI views, and nothing else: no writes, no DDL, no
-- pipeline tables (etl_*). etl_sync stands for the login the pipeline runs as (the owner of the
-- warehouse objects): replace it if yours has another name.
CREATE ROLE warehouse_reader LOGIN PASSWORD :'reader_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT 20;
ALTER ROLE warehouse_reader SET default_transaction_read_only = on;
-- KPIs that compare with "now" (kpi_order_progress.is_late of open orders) use the session's
-- local time, which should be plant time like every timestamp in the warehouse.
ALTER ROLE warehouse_reader SET timezone = 'Asia/Shanghai';
GRANT CONNECT ON DATABASE :"DBNAME" TO warehouse_reader;
GRANT USAGE ON SCHEMA public TO warehouse_reader;
GRANT SELECT ON
    dim_plant, dim_work_center, dim_routing_operation, dim_material, dim_date, dim_shift, dim_stop_reason,
    fact_production_order, fact_material_requirement, fact_operation_confirmation, fact_quality_inspection,
    fact_goods_movement, fact_equipment_state, fact_inventory_snapshot,
    int_confirmation, int_equipment_state_day, kpi_order_progress, kpi_on_time_delivery, kpi_yield_daily,
    kpi_scrap_pareto, kpi_oee_daily, kpi_inventory_shortfall
TO warehouse_reader;
-- `warehouse build` drops and creates the views again (so a changed view takes effect), which
-- drops their grants with them: let objects the pipeline creates from now on be readable too.
ALTER DEFAULT PRIVILEGES FOR ROLE etl_sync IN SCHEMA public GRANT SELECT ON TABLES TO warehouse_reader;

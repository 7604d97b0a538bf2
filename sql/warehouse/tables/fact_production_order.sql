-- fact_production_order: ERP production orders in every status: the planned side of order
-- progress, lateness and on-time delivery (the MES side is fact_operation_confirmation and
-- fact_goods_movement; kpi_order_progress combines them).
-- Grain: one row per production order. Key: order_no.
-- Loaded by flow wh_fact_production_order. Times are plant local time; quantities in `unit`.
-- is_deleted marks an order the ERP deleted outright (found by the flow's key comparison).
CREATE TABLE IF NOT EXISTS fact_production_order (
    order_no       VARCHAR(12)   NOT NULL PRIMARY KEY,   -- 1000456
    material_no    VARCHAR(18)   NOT NULL,
    plant_code     VARCHAR(10)   NOT NULL,
    planned_qty    NUMERIC(18,3) NOT NULL,
    unit           VARCHAR(3)    NOT NULL,
    planned_start  TIMESTAMP     NOT NULL,
    planned_end    TIMESTAMP     NOT NULL,
    status         VARCHAR(4)    NOT NULL,               -- CRTD REL TECO CLSD CNCL
    created_at     TIMESTAMP     NOT NULL,
    is_deleted     BOOLEAN       NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS ix_fact_production_order_material ON fact_production_order (material_no);

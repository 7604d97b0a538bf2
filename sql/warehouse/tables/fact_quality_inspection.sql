-- fact_quality_inspection: inspection lots of order output (质检) with their defects and result.
-- Grain: one row per MES inspection. Key: inspection_id.
-- Loaded by flow wh_fact_quality_inspection; result is the ERP code (A accepted, R rejected).
CREATE TABLE IF NOT EXISTS fact_quality_inspection (
    inspection_id   INTEGER       NOT NULL PRIMARY KEY,
    inspection_lot  VARCHAR(20)   NOT NULL,
    order_no        VARCHAR(12)   NOT NULL,
    material_no     VARCHAR(18)   NOT NULL,
    sample_size     INTEGER       NOT NULL,
    defect_qty      INTEGER       NOT NULL,
    defect_code     VARCHAR(8),
    result          VARCHAR(1)    NOT NULL,
    inspected_at    TIMESTAMP     NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_fact_quality_inspection_order ON fact_quality_inspection (order_no);

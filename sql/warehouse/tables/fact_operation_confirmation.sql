-- fact_operation_confirmation: what the shop floor reported per operation (报工), in ERP codes,
-- ERP units and plant local time.
-- Grain: one row per MES report number (a re-sent report is the same row). Key: report_no.
-- Loaded by flow wh_fact_operation_confirmation from the MES operation_report; order, work
-- center and unit go through the crosswalks the sync uses.
CREATE TABLE IF NOT EXISTS fact_operation_confirmation (
    report_no       VARCHAR(20)   NOT NULL PRIMARY KEY,  -- R000000123
    order_no        VARCHAR(12)   NOT NULL,
    operation_no    VARCHAR(4)    NOT NULL,              -- 0010
    work_center     VARCHAR(8)    NOT NULL,
    equipment_code  VARCHAR(16)   NOT NULL,              -- as the MES reported it
    good_qty        NUMERIC(18,3) NOT NULL,
    scrap_qty       NUMERIC(18,3) NOT NULL,
    unit            VARCHAR(3)    NOT NULL,
    scrap_reason    VARCHAR(8),
    employee_no     VARCHAR(8),
    start_time      TIMESTAMP     NOT NULL,
    end_time        TIMESTAMP     NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_fact_operation_confirmation_order ON fact_operation_confirmation (order_no);
CREATE INDEX IF NOT EXISTS ix_fact_operation_confirmation_work_center ON fact_operation_confirmation (work_center, end_time);

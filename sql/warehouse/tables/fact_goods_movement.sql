-- fact_goods_movement: material issued to orders (261, 领料) and finished goods received from
-- them (101, 成品入库), as the MES recorded them, in ERP codes, units and plant time.
-- Grain: one row per MES issue or receipt. Key: movement_key (the ERP posting key,
-- MES-ISS-<issue_id> / MES-RCV-<receipt_id>, so a row reconciles with if_goods_movement).
-- Loaded by flows wh_fact_goods_issue and wh_fact_goods_receipt.
CREATE TABLE IF NOT EXISTS fact_goods_movement (
    movement_key   VARCHAR(40)   NOT NULL PRIMARY KEY,
    movement_type  VARCHAR(3)    NOT NULL,               -- 261 issue / 101 receipt
    order_no       VARCHAR(12)   NOT NULL,
    material_no    VARCHAR(18)   NOT NULL,
    plant_code     VARCHAR(10)   NOT NULL,
    quantity       NUMERIC(18,3) NOT NULL,
    unit           VARCHAR(3)    NOT NULL,
    batch          VARCHAR(20),
    posted_at      TIMESTAMP     NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_fact_goods_movement_order ON fact_goods_movement (order_no, material_no);

-- fact_inventory_snapshot: stock on hand at the end of each day it changed (a sparse daily
-- snapshot): the stock on day D is, per storage location, the row with the latest
-- snapshot_date <= D.
-- Grain: one row per material, plant, storage location and day of change.
-- Key: material_no, plant_code, storage_loc, snapshot_date.
-- Loaded by flow wh_fact_inventory_snapshot from the ERP stock levels; as_of is the ERP's
-- last change of that day.
CREATE TABLE IF NOT EXISTS fact_inventory_snapshot (
    material_no    VARCHAR(18)   NOT NULL,
    plant_code     VARCHAR(10)   NOT NULL,
    storage_loc    VARCHAR(4)    NOT NULL,
    snapshot_date  DATE          NOT NULL,
    quantity       NUMERIC(18,3) NOT NULL,
    unit           VARCHAR(3)    NOT NULL,
    as_of          TIMESTAMP     NOT NULL,
    PRIMARY KEY (material_no, plant_code, storage_loc, snapshot_date)
);

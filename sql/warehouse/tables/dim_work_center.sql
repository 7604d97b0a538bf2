-- dim_work_center: ERP work centers with the MES equipment that stands for each of them.
-- Grain: one row per work center. Key: work_center.
-- Loaded by flow wh_dim_work_center; equipment_code comes from mappings/crosswalks/work_center.csv.
CREATE TABLE IF NOT EXISTS dim_work_center (
    work_center     VARCHAR(8)    NOT NULL PRIMARY KEY,  -- WC-ASM1
    plant_code      VARCHAR(10)   NOT NULL,              -- 1000
    description     VARCHAR(60),
    capacity_hours  NUMERIC(8,2),                        -- available hours per day
    equipment_code  VARCHAR(16)   NOT NULL               -- EQ-SH01-ASM-01
);

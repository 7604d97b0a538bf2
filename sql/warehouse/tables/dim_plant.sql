-- dim_plant: the plants, by their ERP (golden) code, with the code the MES knows them by.
-- Grain: one row per plant. Key: plant_code.
-- Loaded by flow wh_dim_plant from the ERP work centers (the ERP has no plant table of its own);
-- mes_plant_code comes from mappings/crosswalks/plant.csv, the crosswalk the sync uses.
CREATE TABLE IF NOT EXISTS dim_plant (
    plant_code      VARCHAR(10)   NOT NULL PRIMARY KEY,  -- 1000
    mes_plant_code  VARCHAR(10)   NOT NULL               -- SH01
);

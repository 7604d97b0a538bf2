-- stg_material: the ERP material master as it is now; staging for the type-2 dim_material.
-- Grain: one row per material. Key: material_no.
-- Loaded (upsert) by flow wh_stg_material; etl.warehouse.apply_material_history turns each change
-- of standard_cost or material_group into a new dim_material version.
CREATE TABLE IF NOT EXISTS stg_material (
    material_no        VARCHAR(18)   NOT NULL PRIMARY KEY,
    material_type      VARCHAR(4)    NOT NULL,           -- FERT / HALB / ROH
    base_unit          VARCHAR(3)    NOT NULL,
    description_zh     VARCHAR(80),
    description_en     VARCHAR(80),
    material_group     VARCHAR(9),
    standard_cost      NUMERIC(18,4),                    -- per base unit
    is_deleted         BOOLEAN       NOT NULL,
    source_updated_at  TIMESTAMP     NOT NULL            -- ERP updated_at: when this state began
);

-- dim_material: materials with type-2 history of standard_cost and material_group.
-- Grain: one row per material and version. Key: material_no, valid_from.
-- A version holds from valid_from (inclusive) to valid_to (exclusive), in plant time; the current
-- one has is_current true and valid_to 9999-12-31; the first starts at 1900-01-01 so every fact
-- finds a version. Descriptions, type, unit and is_deleted are overwritten in every version
-- (type 1). Written only by etl.warehouse.apply_material_history, from stg_material.
-- Join a fact at its own time: valid_from <= fact_time AND fact_time < valid_to.
CREATE TABLE IF NOT EXISTS dim_material (
    material_no      VARCHAR(18)   NOT NULL,
    valid_from       TIMESTAMP     NOT NULL,
    valid_to         TIMESTAMP     NOT NULL,
    is_current       BOOLEAN       NOT NULL,
    material_type    VARCHAR(4)    NOT NULL,
    base_unit        VARCHAR(3)    NOT NULL,
    description_zh   VARCHAR(80),
    description_en   VARCHAR(80),
    material_group   VARCHAR(9),
    standard_cost    NUMERIC(18,4),
    is_deleted       BOOLEAN       NOT NULL,
    PRIMARY KEY (material_no, valid_from)
);
CREATE INDEX IF NOT EXISTS ix_dim_material_current ON dim_material (material_no, is_current);

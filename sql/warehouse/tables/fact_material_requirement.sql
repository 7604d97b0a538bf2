-- fact_material_requirement: the components each production order needs (ERP reservations).
-- Grain: one row per order and reservation item. Key: order_no, item_no.
-- Loaded by flow wh_fact_material_requirement; quantities in the component's ERP unit.
CREATE TABLE IF NOT EXISTS fact_material_requirement (
    order_no               VARCHAR(12)   NOT NULL,
    item_no                INTEGER       NOT NULL,
    component_material_no  VARCHAR(18)   NOT NULL,
    required_qty           NUMERIC(18,3) NOT NULL,
    unit                   VARCHAR(3)    NOT NULL,
    PRIMARY KEY (order_no, item_no)
);
CREATE INDEX IF NOT EXISTS ix_fact_material_requirement_material ON fact_material_requirement (component_material_no);

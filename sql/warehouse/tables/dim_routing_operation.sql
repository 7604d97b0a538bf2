-- dim_routing_operation: the operations of each material's routing with their standard times,
-- the yardstick of OEE performance.
-- Grain: one row per material and operation. Key: material_no, operation_no.
-- Loaded by flow wh_dim_routing_operation from the ERP routings. Times are per unit of the
-- material's base unit, the unit production orders and confirmations are counted in.
CREATE TABLE IF NOT EXISTS dim_routing_operation (
    material_no           VARCHAR(18)   NOT NULL,        -- MAT-000123
    operation_no          VARCHAR(4)    NOT NULL,        -- 0010
    work_center           VARCHAR(8)    NOT NULL,
    description           VARCHAR(60),
    std_minutes_per_unit  NUMERIC(10,4) NOT NULL,        -- machine minutes per unit
    setup_minutes         NUMERIC(10,2) NOT NULL,
    unit                  VARCHAR(3)    NOT NULL,
    PRIMARY KEY (material_no, operation_no)
);

-- Demo ERP schema: the "golden" system for master data and production orders.
-- Portable DDL (PostgreSQL and SQLite). Timestamps are naive local plant time (Asia/Shanghai),
-- as most ERPs store them. Every table the sync reads carries updated_at, the extraction cursor.
-- Statements are separated by ";" at line end; demo.schema runs them one by one.

-- Material master: finished (FERT), semi-finished (HALB) and raw (ROH) materials.
CREATE TABLE material (
    material_no     VARCHAR(18)   NOT NULL PRIMARY KEY,  -- MAT-000123
    material_type   VARCHAR(4)    NOT NULL,              -- FERT / HALB / ROH
    base_unit       VARCHAR(3)    NOT NULL,              -- KG / PC / M
    description_zh  VARCHAR(80),
    description_en  VARCHAR(80),
    material_group  VARCHAR(9),
    standard_cost   NUMERIC(18,4),
    is_deleted      BOOLEAN       NOT NULL DEFAULT FALSE,
    updated_at      TIMESTAMP     NOT NULL
);

-- Bill of materials: one row per component of a parent material.
CREATE TABLE bom_item (
    parent_material_no    VARCHAR(18)   NOT NULL,
    item_no               INTEGER       NOT NULL,        -- 10, 20, 30 ...
    base_quantity         NUMERIC(18,3) NOT NULL,        -- quantity of the parent ...
    base_unit             VARCHAR(3)    NOT NULL,
    component_material_no VARCHAR(18)   NOT NULL,
    quantity              NUMERIC(18,3) NOT NULL,        -- ... that needs this much component
    unit                  VARCHAR(3)    NOT NULL,
    updated_at            TIMESTAMP     NOT NULL,
    PRIMARY KEY (parent_material_no, item_no)
);

-- Work centers: where operations run. MES knows them as equipment.
CREATE TABLE work_center (
    work_center     VARCHAR(8)    NOT NULL PRIMARY KEY,  -- WC-ASM1
    plant           VARCHAR(4)    NOT NULL,              -- 1000
    description     VARCHAR(60),
    capacity_hours  NUMERIC(8,2),
    updated_at      TIMESTAMP     NOT NULL
);

-- Routing operations: the steps to make a material, with their standard times.
CREATE TABLE routing_operation (
    material_no         VARCHAR(18)   NOT NULL,
    operation_no        VARCHAR(4)    NOT NULL,          -- 0010, 0020 ...
    work_center         VARCHAR(8)    NOT NULL,
    description         VARCHAR(60),
    std_minutes_per_unit NUMERIC(10,4) NOT NULL,         -- machine time per unit below
    unit                VARCHAR(3)    NOT NULL,
    setup_minutes       NUMERIC(10,2) NOT NULL,
    updated_at          TIMESTAMP     NOT NULL,
    PRIMARY KEY (material_no, operation_no)
);

-- Personnel master.
CREATE TABLE employee (
    employee_no     VARCHAR(8)    NOT NULL PRIMARY KEY,  -- 00004711
    name            VARCHAR(40)   NOT NULL,
    plant           VARCHAR(4)    NOT NULL,
    work_center     VARCHAR(8),
    is_active       BOOLEAN       NOT NULL DEFAULT TRUE,
    updated_at      TIMESTAMP     NOT NULL
);

-- Production orders. Status: CRTD created, REL released, TECO technically complete,
-- CLSD closed, CNCL cancelled. Only released-or-later orders go to the MES.
CREATE TABLE production_order (
    order_no        VARCHAR(12)   NOT NULL PRIMARY KEY,  -- 1000456
    material_no     VARCHAR(18)   NOT NULL,
    plant           VARCHAR(4)    NOT NULL,
    quantity        NUMERIC(18,3) NOT NULL,
    unit            VARCHAR(3)    NOT NULL,
    planned_start   TIMESTAMP     NOT NULL,
    planned_end     TIMESTAMP     NOT NULL,
    status          VARCHAR(4)    NOT NULL,
    created_at      TIMESTAMP     NOT NULL,
    updated_at      TIMESTAMP     NOT NULL
);

-- Order components (reservations): what each order needs to consume.
CREATE TABLE order_component (
    order_no              VARCHAR(12)   NOT NULL,
    item_no               INTEGER       NOT NULL,
    component_material_no VARCHAR(18)   NOT NULL,
    required_qty          NUMERIC(18,3) NOT NULL,
    unit                  VARCHAR(3)    NOT NULL,
    updated_at            TIMESTAMP     NOT NULL,
    PRIMARY KEY (order_no, item_no)
);

-- Stock on hand per material and plant (read by the warehouse).
CREATE TABLE stock_level (
    material_no     VARCHAR(18)   NOT NULL,
    plant           VARCHAR(4)    NOT NULL,
    storage_loc     VARCHAR(4)    NOT NULL,
    quantity        NUMERIC(18,3) NOT NULL,
    unit            VARCHAR(3)    NOT NULL,
    updated_at      TIMESTAMP     NOT NULL,
    PRIMARY KEY (material_no, plant, storage_loc)
);

-- Inbound interface: operation confirmations from the MES. The ERP posts them itself;
-- posting_key makes a re-sent confirmation a no-op instead of a double posting.
CREATE TABLE if_confirmation (
    posting_key     VARCHAR(40)   NOT NULL PRIMARY KEY,  -- MES-OPR-000000123
    order_no        VARCHAR(12)   NOT NULL,
    operation_no    VARCHAR(4)    NOT NULL,
    work_center     VARCHAR(8)    NOT NULL,
    yield_qty       NUMERIC(18,3) NOT NULL,
    scrap_qty       NUMERIC(18,3) NOT NULL,
    unit            VARCHAR(3)    NOT NULL,
    scrap_reason    VARCHAR(8),
    employee_no     VARCHAR(8),
    start_time      TIMESTAMP     NOT NULL,              -- local plant time
    end_time        TIMESTAMP     NOT NULL,
    posted          BOOLEAN       NOT NULL DEFAULT FALSE
);

-- Inbound interface: goods movements. 261 = issue to order, 101 = receipt from order.
CREATE TABLE if_goods_movement (
    posting_key     VARCHAR(40)   NOT NULL PRIMARY KEY,  -- MES-ISS-... / MES-RCV-...
    movement_type   VARCHAR(3)    NOT NULL,
    order_no        VARCHAR(12)   NOT NULL,
    material_no     VARCHAR(18)   NOT NULL,
    plant           VARCHAR(4)    NOT NULL,
    quantity        NUMERIC(18,3) NOT NULL,
    unit            VARCHAR(3)    NOT NULL,
    batch           VARCHAR(20),
    posting_time    TIMESTAMP     NOT NULL,              -- local plant time
    posted          BOOLEAN       NOT NULL DEFAULT FALSE
);

-- Inbound interface: quality inspection results.
CREATE TABLE if_quality_result (
    posting_key     VARCHAR(40)   NOT NULL PRIMARY KEY,  -- MES-QI-...
    inspection_lot  VARCHAR(20)   NOT NULL,
    order_no        VARCHAR(12)   NOT NULL,
    material_no     VARCHAR(18)   NOT NULL,
    sample_size     INTEGER       NOT NULL,
    defect_qty      INTEGER       NOT NULL,
    defect_code     VARCHAR(8),
    result          VARCHAR(1)    NOT NULL,              -- A accepted / R rejected
    inspected_at    TIMESTAMP     NOT NULL,              -- local plant time
    posted          BOOLEAN       NOT NULL DEFAULT FALSE
);

-- The sync reads by updated_at: without these indexes every incremental run scans the table.
CREATE INDEX ix_material_updated_at ON material (updated_at);
CREATE INDEX ix_bom_item_updated_at ON bom_item (updated_at);
CREATE INDEX ix_work_center_updated_at ON work_center (updated_at);
CREATE INDEX ix_routing_operation_updated_at ON routing_operation (updated_at);
CREATE INDEX ix_employee_updated_at ON employee (updated_at);
CREATE INDEX ix_production_order_updated_at ON production_order (updated_at);
CREATE INDEX ix_order_component_updated_at ON order_component (updated_at);
CREATE INDEX ix_stock_level_updated_at ON stock_level (updated_at);

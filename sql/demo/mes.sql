-- Demo MES schema: executes work orders on the shop floor and reports back.
-- Portable DDL (PostgreSQL and SQLite). Timestamps are naive UTC, as many MES store them.
-- Codes differ from the ERP on purpose: item 100123 is ERP material MAT-000123, work order
-- WO-2026-000456 is ERP order 1000456, unit g is ERP KG / 1000, plant SH01 is ERP 1000.
-- Tables filled by the sync (item ... work_order_component) carry no cursor of their own;
-- tables the MES writes (operation_report ...) carry updated_at, the extraction cursor.

-- Items, loaded from the ERP material master.
CREATE TABLE item (
    item_code       VARCHAR(12)   NOT NULL PRIMARY KEY,  -- 100123
    item_type       VARCHAR(12)   NOT NULL,              -- FINISHED / SEMI / RAW
    unit            VARCHAR(4)    NOT NULL,              -- g / kg / pcs / m
    name_zh         VARCHAR(80),
    name_en         VARCHAR(80),
    item_group      VARCHAR(9),
    is_deleted      BOOLEAN       NOT NULL DEFAULT FALSE
);

-- Bill of materials: per_qty of the parent needs component_qty of the component.
CREATE TABLE item_bom (
    parent_item_code    VARCHAR(12)   NOT NULL,
    line_no             INTEGER       NOT NULL,
    per_qty             NUMERIC(18,3) NOT NULL,
    per_unit            VARCHAR(4)    NOT NULL,
    component_item_code VARCHAR(12)   NOT NULL,
    component_qty       NUMERIC(18,3) NOT NULL,
    component_unit      VARCHAR(4)    NOT NULL,
    PRIMARY KEY (parent_item_code, line_no)
);

-- Equipment: ERP work centers as the MES names them.
CREATE TABLE equipment (
    equipment_code  VARCHAR(16)   NOT NULL PRIMARY KEY,  -- EQ-SH01-ASM-01
    plant_code      VARCHAR(4)    NOT NULL,              -- SH01
    name            VARCHAR(60),
    capacity_hours  NUMERIC(8,2)
);

-- Route steps: operations of an item with their cycle time per item unit.
CREATE TABLE route_step (
    item_code       VARCHAR(12)   NOT NULL,
    step_no         INTEGER       NOT NULL,              -- 10, 20 ...
    equipment_code  VARCHAR(16)   NOT NULL,
    description     VARCHAR(60),
    cycle_time_sec  NUMERIC(14,6) NOT NULL,
    setup_time_sec  NUMERIC(10,1) NOT NULL,
    PRIMARY KEY (item_code, step_no)
);

-- Operators who may report on the shop floor.
CREATE TABLE operator (
    badge_no        VARCHAR(8)    NOT NULL PRIMARY KEY,
    name            VARCHAR(40)   NOT NULL,
    plant_code      VARCHAR(4)    NOT NULL,
    equipment_code  VARCHAR(16),
    active          BOOLEAN       NOT NULL
);

-- Work orders, loaded from ERP production orders.
-- Status: READY RUNNING DONE CLOSED CANCELLED. is_deleted marks an order the ERP deleted.
CREATE TABLE work_order (
    wo_no             VARCHAR(20)   NOT NULL PRIMARY KEY, -- WO-2026-000456
    item_code         VARCHAR(12)   NOT NULL,
    plant_code        VARCHAR(4)    NOT NULL,
    planned_qty       NUMERIC(18,3) NOT NULL,
    unit              VARCHAR(4)    NOT NULL,
    planned_start_utc TIMESTAMP     NOT NULL,
    planned_end_utc   TIMESTAMP     NOT NULL,
    status            VARCHAR(10)   NOT NULL,
    is_deleted        BOOLEAN       NOT NULL DEFAULT FALSE
);

-- Components each work order needs (from ERP reservations).
CREATE TABLE work_order_component (
    wo_no               VARCHAR(20)   NOT NULL,
    line_no             INTEGER       NOT NULL,
    component_item_code VARCHAR(12)   NOT NULL,
    required_qty        NUMERIC(18,3) NOT NULL,
    unit                VARCHAR(4)    NOT NULL,
    PRIMARY KEY (wo_no, line_no)
);

-- Operation reports (报工): good and scrap quantity per step. report_no is the MES
-- document number; a re-submitted report repeats it under a new report_id.
CREATE TABLE operation_report (
    report_id         INTEGER       NOT NULL PRIMARY KEY,
    report_no         VARCHAR(20)   NOT NULL,
    wo_no             VARCHAR(20)   NOT NULL,
    step_no           INTEGER       NOT NULL,
    equipment_code    VARCHAR(16)   NOT NULL,
    good_qty          NUMERIC(18,3) NOT NULL,
    scrap_qty         NUMERIC(18,3) NOT NULL,
    unit              VARCHAR(4)    NOT NULL,
    scrap_reason      VARCHAR(8),
    operator_badge    VARCHAR(8),
    start_time_utc    TIMESTAMP     NOT NULL,
    end_time_utc      TIMESTAMP     NOT NULL,
    updated_at        TIMESTAMP     NOT NULL
);

-- Quality inspections (质检) of work-order output.
CREATE TABLE quality_inspection (
    inspection_id     INTEGER       NOT NULL PRIMARY KEY,
    lot_no            VARCHAR(20)   NOT NULL,
    wo_no             VARCHAR(20)   NOT NULL,
    item_code         VARCHAR(12)   NOT NULL,
    sample_size       INTEGER       NOT NULL,
    defect_qty        INTEGER       NOT NULL,
    defect_code       VARCHAR(8),
    result            VARCHAR(4)    NOT NULL,            -- PASS / FAIL
    inspected_at_utc  TIMESTAMP     NOT NULL,
    updated_at        TIMESTAMP     NOT NULL
);

-- Material issues (领料/投料): components consumed by a work order.
CREATE TABLE material_issue (
    issue_id          INTEGER       NOT NULL PRIMARY KEY,
    wo_no             VARCHAR(20)   NOT NULL,
    item_code         VARCHAR(12)   NOT NULL,
    plant_code        VARCHAR(4)    NOT NULL,
    qty               NUMERIC(18,3) NOT NULL,
    unit              VARCHAR(4)    NOT NULL,            -- g or kg for weighed material
    lot_no            VARCHAR(20),
    issued_at_utc     TIMESTAMP     NOT NULL,
    updated_at        TIMESTAMP     NOT NULL
);

-- Finished-goods receipts (成品入库) of work-order output.
CREATE TABLE fg_receipt (
    receipt_id        INTEGER       NOT NULL PRIMARY KEY,
    wo_no             VARCHAR(20)   NOT NULL,
    item_code         VARCHAR(12)   NOT NULL,
    plant_code        VARCHAR(4)    NOT NULL,
    qty               NUMERIC(18,3) NOT NULL,
    unit              VARCHAR(4)    NOT NULL,
    lot_no            VARCHAR(20),
    received_at_utc   TIMESTAMP     NOT NULL,
    updated_at        TIMESTAMP     NOT NULL
);

-- Equipment state log: RUN / IDLE / DOWN / SETUP intervals (read by the warehouse for OEE).
CREATE TABLE equipment_state_log (
    log_id            INTEGER       NOT NULL PRIMARY KEY,
    equipment_code    VARCHAR(16)   NOT NULL,
    state             VARCHAR(6)    NOT NULL,
    reason_code       VARCHAR(8),
    start_utc         TIMESTAMP     NOT NULL,
    end_utc           TIMESTAMP,
    updated_at        TIMESTAMP     NOT NULL
);

-- The sync reads by updated_at: without these indexes every incremental run scans the table.
CREATE INDEX ix_operation_report_updated_at ON operation_report (updated_at);
CREATE INDEX ix_quality_inspection_updated_at ON quality_inspection (updated_at);
CREATE INDEX ix_material_issue_updated_at ON material_issue (updated_at);
CREATE INDEX ix_fg_receipt_updated_at ON fg_receipt (updated_at);
CREATE INDEX ix_equipment_state_log_updated_at ON equipment_state_log (updated_at);

-- fact_equipment_state: the equipment state log as intervals (RUN / IDLE / DOWN / SETUP), the
-- basis of OEE availability.
-- Grain: one row per state interval. Key: log_id.
-- Loaded by flow wh_fact_equipment_state; an open interval has no end_time and is updated when
-- it closes. Plant local time.
CREATE TABLE IF NOT EXISTS fact_equipment_state (
    log_id          INTEGER       NOT NULL PRIMARY KEY,
    equipment_code  VARCHAR(16)   NOT NULL,
    work_center     VARCHAR(8)    NOT NULL,
    state           VARCHAR(6)    NOT NULL,
    reason_code     VARCHAR(8),
    start_time      TIMESTAMP     NOT NULL,
    end_time        TIMESTAMP
);
CREATE INDEX IF NOT EXISTS ix_fact_equipment_state_work_center ON fact_equipment_state (work_center, start_time);

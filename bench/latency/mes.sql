-- The MES side of the latency benchmark and the event tests: operation reports the shop floor
-- commits one by one, with updated_at (the flow's cursor) stamped at the row's write.
CREATE TABLE operation_report (
    report_no   VARCHAR(20)   NOT NULL PRIMARY KEY,
    wo_no       VARCHAR(20)   NOT NULL,
    good_qty    NUMERIC(18,3) NOT NULL,
    updated_at  TIMESTAMPTZ   NOT NULL DEFAULT clock_timestamp()
);

-- Benchmark target: an ERP inbound table keyed by the posting key.
CREATE TABLE confirmation_in (
    posting_key       VARCHAR(40)   NOT NULL PRIMARY KEY,
    order_no          VARCHAR(12)   NOT NULL,
    operation_no      VARCHAR(4)    NOT NULL,
    work_center       VARCHAR(8)    NOT NULL,
    yield_qty         NUMERIC(21,6) NOT NULL,
    scrap_qty         NUMERIC(21,6) NOT NULL,
    unit              VARCHAR(3)    NOT NULL,
    scrap_reason      VARCHAR(8),
    operator_name     VARCHAR(40),
    start_time        TIMESTAMPTZ   NOT NULL,
    end_time          TIMESTAMPTZ   NOT NULL,
    remark            TEXT,
    source_updated_at TIMESTAMPTZ   NOT NULL
);

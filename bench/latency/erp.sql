-- The ERP side of the latency benchmark and the event tests: the confirmation interface table.
CREATE TABLE if_confirmation (
    posting_key       VARCHAR(40)   NOT NULL PRIMARY KEY,
    order_no          VARCHAR(20)   NOT NULL,
    yield_qty         NUMERIC(18,3) NOT NULL,
    source_updated_at TIMESTAMPTZ   NOT NULL
);

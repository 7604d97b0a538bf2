-- Benchmark workload: MES operation confirmations, 14 columns, generated in the database.
-- :rows is substituted by bench/benchmark.py. Empty strings, NULLs, 18-digit decimals and
-- Chinese text are all present on purpose: generic tools lose some of them.
CREATE TABLE op_confirmation (
    confirmation_id BIGINT        NOT NULL PRIMARY KEY,
    report_no       VARCHAR(20)   NOT NULL,
    wo_no           VARCHAR(20)   NOT NULL,
    step_no         INTEGER       NOT NULL,
    equipment_code  VARCHAR(16)   NOT NULL,
    good_qty        NUMERIC(18,3) NOT NULL,
    scrap_qty       NUMERIC(18,3) NOT NULL,
    unit            VARCHAR(4)    NOT NULL,
    scrap_reason    VARCHAR(8),
    operator_name   VARCHAR(40),
    start_time      TIMESTAMPTZ   NOT NULL,
    end_time        TIMESTAMPTZ   NOT NULL,
    remark          TEXT,
    updated_at      TIMESTAMPTZ   NOT NULL
);
INSERT INTO op_confirmation
SELECT i,
       'R' || lpad(i::text, 9, '0'),
       'WO-2026-' || lpad((i % 250000 + 1)::text, 6, '0'),
       10 * (1 + i % 4),
       (ARRAY['EQ-SH01-CUT-01','EQ-SH01-WLD-01','EQ-SH01-MIX-01','EQ-SH01-ASM-01','EQ-SH01-PKG-01','EQ-SZ01-CUT-01','EQ-SZ01-ASM-01','EQ-SZ01-PKG-01'])[1 + i % 8],
       CASE WHEN i % 1000 = 0 THEN 123456789012345.678 ELSE round((i % 9973) * 1.375, 3) END,
       round((i % 17) * 0.125, 3),
       (ARRAY['g','pcs','m','kg'])[1 + i % 4],
       CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'S0' || (i % 5) END,
       (ARRAY['王伟','李娜','张敏','刘洋',NULL,'陈静'])[1 + i % 6],
       timestamptz '2026-11-01 00:00:00+00' + (i % 100000) * interval '17 seconds' + (i % 997) * interval '1 microsecond',
       timestamptz '2026-11-01 00:30:00+00' + (i % 100000) * interval '17 seconds',
       CASE i % 7 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN '换线 / changeover' ELSE '正常' END,
       timestamptz '2026-11-20 00:00:00+00' + (i / 50) * interval '1 second'
FROM generate_series(1, :rows) AS i;
CREATE INDEX ix_op_confirmation_updated_at ON op_confirmation (updated_at);
ANALYZE op_confirmation;

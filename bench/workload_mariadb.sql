-- Benchmark workload on MariaDB: the same MES operation confirmations as workload.sql, with the
-- timestamps as the naive UTC DATETIME(6) a MariaDB MES keeps. :rows is substituted by
-- bench/benchmark.py; the rows come from the server's own number sequence (seq_1_to_N).
CREATE TABLE op_confirmation (
    confirmation_id BIGINT        NOT NULL PRIMARY KEY,
    report_no       VARCHAR(20)   NOT NULL,
    wo_no           VARCHAR(20)   NOT NULL,
    step_no         INTEGER       NOT NULL,
    equipment_code  VARCHAR(16)   NOT NULL,
    good_qty        DECIMAL(18,3) NOT NULL,
    scrap_qty       DECIMAL(18,3) NOT NULL,
    unit            VARCHAR(4)    NOT NULL,
    scrap_reason    VARCHAR(8),
    operator_name   VARCHAR(40),
    start_time      DATETIME(6)   NOT NULL,
    end_time        DATETIME(6)   NOT NULL,
    remark          TEXT,
    updated_at      DATETIME(6)   NOT NULL,
    KEY ix_op_confirmation_updated_at (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO op_confirmation
SELECT seq,
       CONCAT('R', LPAD(seq, 9, '0')),
       CONCAT('WO-2026-', LPAD(seq % 250000 + 1, 6, '0')),
       10 * (1 + seq % 4),
       ELT(1 + seq % 8, 'EQ-SH01-CUT-01','EQ-SH01-WLD-01','EQ-SH01-MIX-01','EQ-SH01-ASM-01','EQ-SH01-PKG-01',
           'EQ-SZ01-CUT-01','EQ-SZ01-ASM-01','EQ-SZ01-PKG-01'),
       CASE WHEN seq % 1000 = 0 THEN 123456789012345.678 ELSE ROUND((seq % 9973) * 1.375, 3) END,
       ROUND((seq % 17) * 0.125, 3),
       ELT(1 + seq % 4, 'g', 'pcs', 'm', 'kg'),
       CASE seq % 5 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE CONCAT('S0', seq % 5) END,
       CASE seq % 6 WHEN 0 THEN '王伟' WHEN 1 THEN '李娜' WHEN 2 THEN '张敏' WHEN 3 THEN '刘洋' WHEN 4 THEN NULL ELSE '陈静' END,
       TIMESTAMP'2026-11-01 00:00:00' + INTERVAL (seq % 100000) * 17 SECOND + INTERVAL seq % 997 MICROSECOND,
       TIMESTAMP'2026-11-01 00:30:00' + INTERVAL (seq % 100000) * 17 SECOND,
       CASE seq % 7 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN '换线 / changeover' ELSE '正常' END,
       TIMESTAMP'2026-11-20 00:00:00' + INTERVAL seq DIV 50 SECOND
FROM seq_1_to_:rows;
ANALYZE TABLE op_confirmation;

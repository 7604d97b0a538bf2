-- dim_stop_reason: the reason codes of equipment DOWN states, and which of them are planned.
-- Grain: one row per reason code. Key: reason_code.
-- Planned stops (maintenance) do not count against OEE availability: they leave planned time.
-- A DOWN state whose reason is not listed here counts as unplanned. The rows below are the demo's
-- codes; edit them in place (a rebuild keeps rows that exist and only adds missing ones).
CREATE TABLE IF NOT EXISTS dim_stop_reason (
    reason_code     VARCHAR(8)    NOT NULL PRIMARY KEY,
    description     VARCHAR(40)   NOT NULL,
    description_zh  VARCHAR(40),
    is_planned      BOOLEAN       NOT NULL
);
INSERT INTO dim_stop_reason (reason_code, description, description_zh, is_planned)
VALUES ('BRK-MECH', 'Mechanical breakdown', '机械故障', FALSE),
       ('BRK-ELEC', 'Electrical breakdown', '电气故障', FALSE),
       ('NO-MAT', 'Waiting for material', '待料', FALSE),
       ('QA-HOLD', 'Quality hold', '质量冻结', FALSE),
       ('PM', 'Planned maintenance', '计划保养', TRUE)
ON CONFLICT (reason_code) DO NOTHING;

-- dim_shift: the shifts of a plant day, by their time of day (plant time, 'HH:MM').
-- Grain: one row per shift. Key: shift_code.
-- A shift runs from start_time (inclusive) to end_time (exclusive); one whose end is earlier than
-- its start wraps past midnight. The rows below are the demo's pattern; edit them in place (a
-- rebuild keeps rows that exist and only adds missing ones).
CREATE TABLE IF NOT EXISTS dim_shift (
    shift_code     VARCHAR(4)    NOT NULL PRIMARY KEY,
    shift_name     VARCHAR(20)   NOT NULL,
    shift_name_zh  VARCHAR(20),
    start_time     VARCHAR(5)    NOT NULL,               -- 06:00
    end_time       VARCHAR(5)    NOT NULL                -- 14:00
);
INSERT INTO dim_shift (shift_code, shift_name, shift_name_zh, start_time, end_time)
VALUES ('A', 'Early', '早班', '06:00', '14:00'),
       ('B', 'Late', '中班', '14:00', '22:00'),
       ('C', 'Night', '夜班', '22:00', '06:00')
ON CONFLICT (shift_code) DO NOTHING;

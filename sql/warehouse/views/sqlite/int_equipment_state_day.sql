-- int_equipment_state_day: closed equipment state intervals cut at midnight, so each piece
-- belongs to one plant day (SQLite).
-- Grain: one row per state interval and calendar day it overlaps. Key: log_id, calendar_date.
-- minutes = length of [start_time, end_time) ∩ [calendar_date, calendar_date + 1 day), in minutes.
-- Open intervals (no end_time yet) count once they close.
CREATE VIEW int_equipment_state_day AS
WITH cut AS (
    SELECT
        s.log_id,
        s.work_center,
        s.equipment_code,
        s.state,
        s.reason_code,
        d.calendar_date,
        (
            MIN(CAST(strftime('%s', s.end_time) AS INTEGER), CAST(strftime('%s', d.calendar_date, '+1 day') AS INTEGER))
            - MAX(CAST(strftime('%s', s.start_time) AS INTEGER), CAST(strftime('%s', d.calendar_date) AS INTEGER))
        ) / 60.0 AS minutes
    FROM fact_equipment_state s
    JOIN dim_date d ON d.calendar_date BETWEEN date(s.start_time) AND date(s.end_time)
    WHERE s.end_time IS NOT NULL
)
SELECT log_id, work_center, equipment_code, state, reason_code, calendar_date, minutes
FROM cut
WHERE minutes > 0;

-- int_equipment_state_day: closed equipment state intervals cut at midnight, so each piece
-- belongs to one plant day (PostgreSQL).
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
        EXTRACT(EPOCH FROM
            LEAST(s.end_time, d.calendar_date + INTERVAL '1 day')
            - GREATEST(s.start_time, CAST(d.calendar_date AS TIMESTAMP))
        ) / 60 AS minutes
    FROM fact_equipment_state s
    JOIN dim_date d ON d.calendar_date BETWEEN CAST(s.start_time AS DATE) AND CAST(s.end_time AS DATE)
    WHERE s.end_time IS NOT NULL
)
SELECT log_id, work_center, equipment_code, state, reason_code, calendar_date, minutes
FROM cut
WHERE minutes > 0;

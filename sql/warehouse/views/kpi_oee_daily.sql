-- kpi_oee_daily: overall equipment effectiveness per work center (equipment) and plant day.
-- Grain: one row per work center and calendar day with planned production time (a day the
-- machine only stood idle or in planned maintenance has no OEE). Key: work_center, production_date.
-- planned_minutes = state-log minutes that day except IDLE and DOWN for a planned reason
--                   (dim_stop_reason.is_planned): RUN + SETUP + unplanned DOWN;
-- run_minutes     = minutes in state RUN;
-- availability    = run_minutes / planned_minutes;
-- performance     = standard_minutes / run_minutes, where standard_minutes = SUM(routing
--                   std_minutes_per_unit x (good + scrap)) of the confirmations that ended that day;
-- quality         = good_standard_minutes / standard_minutes: good / total output, each unit
--                   weighted by its standard time so pieces and kilograms add up (with one
--                   product it is good units / total units);
-- oee             = availability x performance x quality = good_standard_minutes / planned_minutes.
CREATE VIEW kpi_oee_daily AS
WITH state_time AS (
    SELECT
        s.work_center,
        s.calendar_date,
        SUM(CASE WHEN s.state = 'RUN' THEN s.minutes ELSE 0 END) AS run_minutes,
        SUM(
            CASE WHEN s.state = 'IDLE' OR (s.state = 'DOWN' AND COALESCE(r.is_planned, FALSE)) THEN 0
                 ELSE s.minutes END
        ) AS planned_minutes
    FROM int_equipment_state_day s
    LEFT JOIN dim_stop_reason r ON r.reason_code = s.reason_code
    GROUP BY s.work_center, s.calendar_date
),
produced AS (
    SELECT
        work_center,
        production_date,
        SUM(standard_minutes) AS standard_minutes,
        SUM(good_standard_minutes) AS good_standard_minutes
    FROM int_confirmation
    GROUP BY work_center, production_date
)
SELECT
    t.work_center,
    w.equipment_code,
    w.plant_code,
    t.calendar_date AS production_date,
    ROUND(t.planned_minutes, 2) AS planned_minutes,
    ROUND(t.run_minutes, 2) AS run_minutes,
    ROUND(COALESCE(p.standard_minutes, 0), 2) AS standard_minutes,
    ROUND(COALESCE(p.good_standard_minutes, 0), 2) AS good_standard_minutes,
    ROUND(1.0 * t.run_minutes / NULLIF(t.planned_minutes, 0), 4) AS availability,
    ROUND(1.0 * COALESCE(p.standard_minutes, 0) / NULLIF(t.run_minutes, 0), 4) AS performance,
    ROUND(1.0 * p.good_standard_minutes / NULLIF(p.standard_minutes, 0), 4) AS quality,
    ROUND(1.0 * COALESCE(p.good_standard_minutes, 0) / NULLIF(t.planned_minutes, 0), 4) AS oee
FROM state_time t
JOIN dim_work_center w ON w.work_center = t.work_center
LEFT JOIN produced p ON p.work_center = t.work_center AND p.production_date = t.calendar_date
WHERE t.planned_minutes > 0;

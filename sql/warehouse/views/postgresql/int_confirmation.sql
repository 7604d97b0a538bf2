-- int_confirmation: each operation confirmation with its order's material and plant, the plant
-- day and shift in which it ended, and its output in standard minutes (PostgreSQL).
-- Grain: one row per MES report number. Key: report_no.
-- production_date       = calendar day of end_time (output counts when it is reported);
-- shift_code            = the dim_shift whose [start_time, end_time) holds end_time's time of day;
-- total_qty             = good_qty + scrap_qty;
-- standard_minutes      = routing std_minutes_per_unit of (order material, operation) x total_qty;
-- good_standard_minutes = std_minutes_per_unit x good_qty
--                         (both NULL when the routing has no such operation).
CREATE VIEW int_confirmation AS
WITH timed AS (
    SELECT
        c.report_no,
        c.order_no,
        c.operation_no,
        c.work_center,
        c.good_qty,
        c.scrap_qty,
        c.unit,
        c.scrap_reason,
        c.start_time,
        c.end_time,
        CAST(c.end_time AS DATE) AS production_date,
        to_char(c.end_time, 'HH24:MI') AS end_time_of_day
    FROM fact_operation_confirmation c
)
SELECT
    t.report_no,
    t.order_no,
    t.operation_no,
    o.material_no,
    o.plant_code,
    t.work_center,
    t.good_qty,
    t.scrap_qty,
    t.good_qty + t.scrap_qty AS total_qty,
    t.unit,
    t.scrap_reason,
    t.start_time,
    t.end_time,
    t.production_date,
    (
        SELECT MIN(s.shift_code)
        FROM dim_shift s
        WHERE (s.start_time < s.end_time AND t.end_time_of_day >= s.start_time AND t.end_time_of_day < s.end_time)
           OR (s.start_time > s.end_time AND (t.end_time_of_day >= s.start_time OR t.end_time_of_day < s.end_time))
    ) AS shift_code,
    r.std_minutes_per_unit * (t.good_qty + t.scrap_qty) AS standard_minutes,
    r.std_minutes_per_unit * t.good_qty AS good_standard_minutes
FROM timed t
JOIN fact_production_order o ON o.order_no = t.order_no
LEFT JOIN dim_routing_operation r ON r.material_no = o.material_no AND r.operation_no = t.operation_no;

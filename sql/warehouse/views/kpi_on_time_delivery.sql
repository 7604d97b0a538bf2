-- kpi_on_time_delivery: share of completed orders finished by their planned end, per plant and
-- planned-end day.
-- Grain: one row per plant and planned_end_date with a completed order. Key: plant_code, planned_end_date.
-- delivered_orders = completed orders (ERP status TECO or CLSD) with a known finish
--                    (kpi_order_progress.finished_at: last goods receipt, else last confirmation);
-- on_time_orders   = those finished at or before planned_end;
-- on_time_rate     = on_time_orders / delivered_orders.
CREATE VIEW kpi_on_time_delivery AS
SELECT
    plant_code,
    planned_end_date,
    COUNT(*) AS delivered_orders,
    SUM(CASE WHEN is_late = 0 THEN 1 ELSE 0 END) AS on_time_orders,
    ROUND(1.0 * SUM(CASE WHEN is_late = 0 THEN 1 ELSE 0 END) / COUNT(*), 4) AS on_time_rate
FROM kpi_order_progress
WHERE is_complete = 1 AND finished_at IS NOT NULL
GROUP BY plant_code, planned_end_date;

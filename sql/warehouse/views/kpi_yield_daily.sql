-- kpi_yield_daily: yield and first-pass yield per material, work center and plant day.
-- Grain: one row per production_date, material_no and work_center (with the unit they are
-- counted in). Key: production_date, material_no, work_center, unit.
-- yield_rate       = SUM(good_qty) / SUM(good_qty + scrap_qty), over the day's confirmations;
-- operation_lots   = distinct (order, operation) confirmed that day;
-- lots_with_scrap  = those of them with any scrap;
-- first_pass_yield = 1 - lots_with_scrap / operation_lots: the share of order operations done
--                    right the first time (no unit scrapped). The MES reports no rework, so a
--                    lot with scrap is the lot that did not pass first time.
CREATE VIEW kpi_yield_daily AS
SELECT
    production_date,
    material_no,
    work_center,
    unit,
    ROUND(SUM(good_qty), 3) AS good_qty,
    ROUND(SUM(scrap_qty), 3) AS scrap_qty,
    ROUND(1.0 * SUM(good_qty) / NULLIF(SUM(total_qty), 0), 4) AS yield_rate,
    COUNT(DISTINCT order_no || '/' || operation_no) AS operation_lots,
    COUNT(DISTINCT CASE WHEN scrap_qty > 0 THEN order_no || '/' || operation_no END) AS lots_with_scrap,
    ROUND(
        1.0 - 1.0 * COUNT(DISTINCT CASE WHEN scrap_qty > 0 THEN order_no || '/' || operation_no END)
            / COUNT(DISTINCT order_no || '/' || operation_no),
        4
    ) AS first_pass_yield
FROM int_confirmation
GROUP BY production_date, material_no, work_center, unit;

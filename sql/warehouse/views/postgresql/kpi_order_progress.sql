-- kpi_order_progress: progress and lateness of every production order, the ERP plan against
-- what the MES reported (PostgreSQL).
-- Grain: one row per production order not deleted in the ERP. Key: order_no.
-- final operation    = the highest operation_no of the material's routing (of the order's own
--                      confirmations when the routing is unknown);
-- reported_good_qty  = good_qty confirmed at the final operation (the order's output);
-- reported_scrap_qty = scrap_qty confirmed at any operation;
-- received_qty       = finished goods received (movement 101);
-- progress           = reported_good_qty / planned_qty;
-- actual_start / actual_end = first confirmation start / last confirmation end;
-- finished_at        = last goods receipt (delivered_at), else actual_end;
-- is_complete        = 1 when the ERP status is TECO or CLSD;
-- lateness_hours     = (finished_at - planned_end) in hours, complete orders only (negative: early);
-- is_late            = complete: finished_at > planned_end;
--                      open (CRTD, REL): planned_end has passed (now, in the database's local time);
--                      cancelled: 0.
CREATE VIEW kpi_order_progress AS
WITH final_operation AS (
    SELECT
        o.order_no,
        COALESCE(
            (SELECT MAX(r.operation_no) FROM dim_routing_operation r WHERE r.material_no = o.material_no),
            (SELECT MAX(c.operation_no) FROM fact_operation_confirmation c WHERE c.order_no = o.order_no)
        ) AS operation_no
    FROM fact_production_order o
),
confirmed AS (
    SELECT
        c.order_no,
        SUM(CASE WHEN c.operation_no = f.operation_no THEN c.good_qty ELSE 0 END) AS good_qty,
        SUM(c.scrap_qty) AS scrap_qty,
        MIN(c.start_time) AS actual_start,
        MAX(c.end_time) AS actual_end
    FROM fact_operation_confirmation c
    JOIN final_operation f ON f.order_no = c.order_no
    GROUP BY c.order_no
),
received AS (
    SELECT order_no, SUM(quantity) AS received_qty, MAX(posted_at) AS delivered_at
    FROM fact_goods_movement
    WHERE movement_type = '101'
    GROUP BY order_no
),
progress AS (
    SELECT
        o.order_no,
        o.plant_code,
        o.material_no,
        o.status,
        o.unit,
        o.planned_qty,
        ROUND(COALESCE(c.good_qty, 0), 3) AS reported_good_qty,
        ROUND(COALESCE(c.scrap_qty, 0), 3) AS reported_scrap_qty,
        ROUND(COALESCE(r.received_qty, 0), 3) AS received_qty,
        o.planned_start,
        o.planned_end,
        c.actual_start,
        c.actual_end,
        r.delivered_at,
        COALESCE(r.delivered_at, c.actual_end) AS finished_at,
        CASE WHEN o.status IN ('TECO', 'CLSD') THEN 1 ELSE 0 END AS is_complete
    FROM fact_production_order o
    LEFT JOIN confirmed c ON c.order_no = o.order_no
    LEFT JOIN received r ON r.order_no = o.order_no
    WHERE NOT o.is_deleted
)
SELECT
    order_no,
    plant_code,
    material_no,
    status,
    unit,
    planned_qty,
    reported_good_qty,
    reported_scrap_qty,
    received_qty,
    ROUND(1.0 * reported_good_qty / NULLIF(planned_qty, 0), 4) AS progress,
    planned_start,
    planned_end,
    CAST(planned_end AS DATE) AS planned_end_date,
    actual_start,
    actual_end,
    delivered_at,
    finished_at,
    is_complete,
    CASE WHEN is_complete = 1 AND finished_at IS NOT NULL THEN
        ROUND(EXTRACT(EPOCH FROM finished_at - planned_end) / 3600, 2)
    END AS lateness_hours,
    CASE
        WHEN is_complete = 1 AND finished_at IS NULL THEN NULL
        WHEN is_complete = 1 AND finished_at > planned_end THEN 1
        WHEN status IN ('CRTD', 'REL') AND planned_end < LOCALTIMESTAMP THEN 1
        ELSE 0
    END AS is_late
FROM progress;

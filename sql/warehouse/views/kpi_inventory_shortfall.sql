-- kpi_inventory_shortfall: open component requirements of open orders against stock on hand.
-- Grain: one row per plant, material and unit with an open requirement. Key: plant_code, material_no, unit.
-- open requirement of an order line = required_qty - issued_qty (movement 261 to that order and
--                        material), never below 0; open orders are ERP status CRTD or REL;
-- open_requirement_qty = SUM of the open requirements; open_orders = orders with one;
-- stock_qty            = SUM over storage locations of the latest fact_inventory_snapshot row;
-- shortfall_qty        = open_requirement_qty - stock_qty when positive, else 0;
-- coverage             = stock_qty / open_requirement_qty;
-- is_short             = 1 when shortfall_qty > 0 (an inventory alert).
CREATE VIEW kpi_inventory_shortfall AS
WITH requirement AS (
    SELECT
        q.order_no,
        o.plant_code,
        q.component_material_no AS material_no,
        q.unit,
        SUM(q.required_qty) AS required_qty
    FROM fact_material_requirement q
    JOIN fact_production_order o ON o.order_no = q.order_no
    WHERE o.status IN ('CRTD', 'REL') AND NOT o.is_deleted
    GROUP BY q.order_no, o.plant_code, q.component_material_no, q.unit
),
issued AS (
    SELECT order_no, material_no, unit, SUM(quantity) AS issued_qty
    FROM fact_goods_movement
    WHERE movement_type = '261'
    GROUP BY order_no, material_no, unit
),
open_requirement AS (
    SELECT
        r.plant_code,
        r.material_no,
        r.unit,
        SUM(CASE WHEN r.required_qty > COALESCE(i.issued_qty, 0) THEN 1 ELSE 0 END) AS open_orders,
        SUM(
            CASE WHEN r.required_qty > COALESCE(i.issued_qty, 0) THEN r.required_qty - COALESCE(i.issued_qty, 0)
                 ELSE 0 END
        ) AS open_qty
    FROM requirement r
    LEFT JOIN issued i ON i.order_no = r.order_no AND i.material_no = r.material_no AND i.unit = r.unit
    GROUP BY r.plant_code, r.material_no, r.unit
),
stock AS (
    SELECT
        s.plant_code,
        s.material_no,
        s.unit,
        SUM(s.quantity) AS stock_qty,
        MAX(s.snapshot_date) AS stock_as_of
    FROM fact_inventory_snapshot s
    WHERE s.snapshot_date = (
        SELECT MAX(l.snapshot_date)
        FROM fact_inventory_snapshot l
        WHERE l.material_no = s.material_no AND l.plant_code = s.plant_code AND l.storage_loc = s.storage_loc
    )
    GROUP BY s.plant_code, s.material_no, s.unit
)
SELECT
    r.plant_code,
    r.material_no,
    r.unit,
    r.open_orders,
    ROUND(r.open_qty, 3) AS open_requirement_qty,
    ROUND(COALESCE(s.stock_qty, 0), 3) AS stock_qty,
    s.stock_as_of,
    ROUND(CASE WHEN r.open_qty > COALESCE(s.stock_qty, 0) THEN r.open_qty - COALESCE(s.stock_qty, 0) ELSE 0 END, 3)
        AS shortfall_qty,
    ROUND(1.0 * COALESCE(s.stock_qty, 0) / r.open_qty, 4) AS coverage,
    CASE WHEN r.open_qty > COALESCE(s.stock_qty, 0) THEN 1 ELSE 0 END AS is_short
FROM open_requirement r
LEFT JOIN stock s ON s.plant_code = r.plant_code AND s.material_no = r.material_no AND s.unit = r.unit
WHERE r.open_qty > 0;

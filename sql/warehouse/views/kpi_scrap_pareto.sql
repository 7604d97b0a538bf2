-- kpi_scrap_pareto: scrap by reason, largest cost first, with the cumulative share (Pareto).
-- Grain: one row per scrap reason. Key: scrap_reason ('(none)' for scrap reported without one).
-- scrap_cost       = SUM(scrap_qty x standard_cost of the material version valid when the scrap
--                    was reported: dim_material.valid_from <= end_time < valid_to);
--                    materials without a standard cost add nothing;
-- share            = scrap_cost / total scrap_cost;
-- cumulative_share = running SUM(scrap_cost) in pareto_rank order / total scrap_cost.
CREATE VIEW kpi_scrap_pareto AS
WITH by_reason AS (
    SELECT
        COALESCE(c.scrap_reason, '(none)') AS scrap_reason,
        COUNT(*) AS scrap_reports,
        COALESCE(SUM(c.scrap_qty * m.standard_cost), 0) AS scrap_cost
    FROM int_confirmation c
    LEFT JOIN dim_material m
        ON m.material_no = c.material_no AND m.valid_from <= c.end_time AND c.end_time < m.valid_to
    WHERE c.scrap_qty > 0
    GROUP BY COALESCE(c.scrap_reason, '(none)')
)
SELECT
    scrap_reason,
    scrap_reports,
    ROUND(scrap_cost, 2) AS scrap_cost,
    ROW_NUMBER() OVER (ORDER BY scrap_cost DESC, scrap_reason) AS pareto_rank,
    ROUND(1.0 * scrap_cost / NULLIF(SUM(scrap_cost) OVER (), 0), 4) AS share,
    ROUND(
        1.0 * SUM(scrap_cost) OVER (ORDER BY scrap_cost DESC, scrap_reason ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            / NULLIF(SUM(scrap_cost) OVER (), 0),
        4
    ) AS cumulative_share
FROM by_reason;

-- dim_date: the calendar, one row per day; filled by `python -m etl warehouse build`
-- (etl.warehouse.fill_dim_date) for 2020-01-01 .. 2035-12-31.
-- Grain: one row per calendar day. Key: calendar_date.
-- Days are plant days: every timestamp in the warehouse is plant local time.
CREATE TABLE IF NOT EXISTS dim_date (
    calendar_date  DATE          NOT NULL PRIMARY KEY,
    year           INTEGER       NOT NULL,
    quarter        INTEGER       NOT NULL,
    month          INTEGER       NOT NULL,
    year_month     VARCHAR(7)    NOT NULL,               -- 2026-11
    day_of_month   INTEGER       NOT NULL,
    iso_year       INTEGER       NOT NULL,
    iso_week       INTEGER       NOT NULL,
    day_of_week    INTEGER       NOT NULL,               -- 1 Monday .. 7 Sunday
    is_weekend     BOOLEAN       NOT NULL
);

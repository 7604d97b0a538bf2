-- Interface (staging) tables on the Odoo database that the pipeline writes: ERPNext work orders
-- and their required items, waiting for Odoo to turn them into manufacturing orders (an Odoo
-- scheduled action or a module reads them). Each has its own serial id, as Odoo tables do, and
-- a unique index on the ERPNext natural key, which is what the sync upserts by.
-- Writing into mrp_production itself (a serial id, the ERPNext name kept in `origin`, the
-- document number from ir_sequence) is done with the load options for a product's own tables.

CREATE TABLE x_erpnext_work_order (
    id serial PRIMARY KEY,
    erp_name character varying NOT NULL,
    product_id integer NOT NULL REFERENCES product_product (id),
    product_name character varying,
    product_qty numeric NOT NULL,
    product_uom_id integer NOT NULL REFERENCES uom_uom (id),
    date_start timestamp without time zone,
    date_deadline date,
    erp_status character varying,
    company_name character varying,
    create_date timestamp without time zone DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE UNIQUE INDEX x_erpnext_work_order_erp_name_uniq ON x_erpnext_work_order (erp_name);

CREATE TABLE x_erpnext_work_order_line (
    id serial PRIMARY KEY,
    erp_work_order character varying NOT NULL,
    line_no integer NOT NULL,
    product_id integer NOT NULL REFERENCES product_product (id),
    product_uom_qty numeric NOT NULL,
    product_uom integer NOT NULL REFERENCES uom_uom (id),
    quantity numeric
);
CREATE UNIQUE INDEX x_erpnext_work_order_line_uniq ON x_erpnext_work_order_line (erp_work_order, line_no);

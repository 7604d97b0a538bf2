-- Odoo Manufacturing (MRP) tables, as they stand on PostgreSQL: manufacturing orders, their
-- stock moves, products and their templates, units of measure and the sequences that number
-- documents. Modelled on Odoo 17.0 Community (models mrp.production, stock.move,
-- product.product, product.template, uom.uom, uom.category, ir.sequence, res.company); the
-- ORM's standard columns (id, create_uid, create_date, write_uid, write_date) are kept, with
-- the fields that matter for a sync and a few realistic extras. Not every field is here.
--
-- What an integrator must know, read from these tables:
--   * every record has a serial integer `id`; other records point to it (product_id,
--     product_uom_id, company_id): codes such as an item code live elsewhere
--     (product_product.default_code), so ERP codes are looked up to ids;
--   * records are archived, not deleted (`active` false): two products may share a
--     default_code, one archived;
--   * translatable names (product_template.name, uom_uom.name) are JSONB keyed by language,
--     e.g. {"en_US": "Bolt M8", "zh_CN": "螺栓 M8"};
--   * datetimes are naive UTC (`timestamp without time zone`); `write_date` is the change cursor;
--   * `state` is the workflow: draft, confirmed, progress, to_close, done, cancel;
--   * document numbers (mrp_production.name, e.g. WH/MO/00001) come from ir_sequence.

CREATE TABLE res_company (
    id serial PRIMARY KEY,
    name character varying NOT NULL,
    currency_id integer,
    active boolean DEFAULT true,
    create_date timestamp without time zone,
    write_date timestamp without time zone
);

CREATE TABLE uom_category (
    id serial PRIMARY KEY,
    name jsonb NOT NULL,
    create_date timestamp without time zone,
    write_date timestamp without time zone
);

CREATE TABLE uom_uom (
    id serial PRIMARY KEY,
    category_id integer NOT NULL REFERENCES uom_category (id),
    name jsonb NOT NULL,
    uom_type character varying NOT NULL,
    factor numeric NOT NULL,
    rounding numeric NOT NULL,
    active boolean DEFAULT true,
    create_uid integer,
    create_date timestamp without time zone,
    write_uid integer,
    write_date timestamp without time zone,
    CONSTRAINT uom_uom_factor_gt_zero CHECK (factor <> 0),
    CONSTRAINT uom_uom_rounding_gt_zero CHECK (rounding > 0)
);

CREATE TABLE product_template (
    id serial PRIMARY KEY,
    name jsonb NOT NULL,
    default_code character varying,
    description jsonb,
    detailed_type character varying NOT NULL,
    type character varying NOT NULL,
    categ_id integer,
    uom_id integer NOT NULL REFERENCES uom_uom (id),
    uom_po_id integer NOT NULL REFERENCES uom_uom (id),
    list_price numeric,
    sale_ok boolean,
    purchase_ok boolean,
    active boolean,
    company_id integer REFERENCES res_company (id),
    create_uid integer,
    create_date timestamp without time zone,
    write_uid integer,
    write_date timestamp without time zone
);

CREATE TABLE product_product (
    id serial PRIMARY KEY,
    product_tmpl_id integer NOT NULL REFERENCES product_template (id) ON DELETE CASCADE,
    default_code character varying,
    barcode character varying,
    combination_indices character varying,
    volume numeric,
    weight numeric,
    active boolean,
    create_uid integer,
    create_date timestamp without time zone,
    write_uid integer,
    write_date timestamp without time zone
);
CREATE UNIQUE INDEX product_product_combination_unique ON product_product (product_tmpl_id, combination_indices) WHERE active IS TRUE;
CREATE INDEX product_product_default_code_index ON product_product (default_code);

CREATE TABLE ir_sequence (
    id serial PRIMARY KEY,
    name character varying NOT NULL,
    code character varying,
    implementation character varying NOT NULL,
    active boolean,
    prefix character varying,
    suffix character varying,
    number_next integer NOT NULL,
    number_increment integer NOT NULL,
    padding integer NOT NULL,
    company_id integer REFERENCES res_company (id),
    use_date_range boolean,
    create_date timestamp without time zone,
    write_date timestamp without time zone
);

CREATE TABLE mrp_production (
    id serial PRIMARY KEY,
    name character varying NOT NULL,
    priority character varying,
    origin character varying,
    product_id integer NOT NULL REFERENCES product_product (id),
    product_tmpl_id integer REFERENCES product_template (id),
    product_qty numeric NOT NULL,
    product_uom_id integer NOT NULL REFERENCES uom_uom (id),
    product_uom_qty numeric,
    qty_producing numeric,
    state character varying NOT NULL,
    reservation_state character varying,
    date_start timestamp without time zone NOT NULL,
    date_finished timestamp without time zone,
    date_deadline timestamp without time zone,
    bom_id integer,
    company_id integer NOT NULL REFERENCES res_company (id),
    picking_type_id integer,
    location_src_id integer,
    location_dest_id integer,
    user_id integer,
    create_uid integer,
    create_date timestamp without time zone,
    write_uid integer,
    write_date timestamp without time zone,
    CONSTRAINT mrp_production_name_uniq UNIQUE (name, company_id),
    CONSTRAINT mrp_production_qty_positive CHECK (product_qty > 0)
);

CREATE TABLE stock_move (
    id serial PRIMARY KEY,
    name character varying NOT NULL,
    reference character varying,
    sequence integer,
    priority character varying,
    date timestamp without time zone NOT NULL,
    date_deadline timestamp without time zone,
    company_id integer NOT NULL REFERENCES res_company (id),
    product_id integer NOT NULL REFERENCES product_product (id),
    product_uom_qty numeric NOT NULL,
    product_uom integer NOT NULL REFERENCES uom_uom (id),
    product_qty numeric,
    quantity numeric,
    location_id integer NOT NULL,
    location_dest_id integer NOT NULL,
    state character varying,
    origin character varying,
    raw_material_production_id integer REFERENCES mrp_production (id),
    production_id integer REFERENCES mrp_production (id),
    create_uid integer,
    create_date timestamp without time zone,
    write_uid integer,
    write_date timestamp without time zone
);
CREATE INDEX stock_move_raw_material_production_id_index ON stock_move (raw_material_production_id);

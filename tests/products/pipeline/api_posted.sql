-- Posted-record tables on the pipeline's own PostgreSQL database, one per flow with a web API
-- target: the values last posted per posting key (the flow's key), written in the run's
-- transaction after the API accepted them. etl_api_posting beside them holds each remote id.

CREATE TABLE api_posted_production_report (
    name character varying PRIMARY KEY,
    work_order character varying,
    item_code character varying,
    produced_qty numeric,
    completed_on timestamp without time zone,
    odoo_state character varying
);

CREATE TABLE api_posted_odoo_work_order (
    erp_name character varying PRIMARY KEY,
    product_id integer,
    product_name character varying,
    product_qty numeric,
    product_uom_id integer,
    date_start timestamp without time zone,
    date_deadline date,
    erp_status character varying,
    company_name character varying
);

CREATE TABLE api_posted_sap_confirmation (
    mes_confirmation character varying PRIMARY KEY,
    order_id character varying NOT NULL,
    operation character varying NOT NULL,
    yield_qty numeric NOT NULL,
    scrap_qty numeric NOT NULL,
    unit character varying NOT NULL
);

-- An interface table on the ERPNext database that the pipeline writes: production reported by
-- Odoo MRP, one row per manufacturing order, shaped like a Frappe custom doctype
-- ("MES Production Report": `name` is the primary key and here the Odoo order's own name, so an
-- upsert by natural key needs no generated key). A server script or an integrator's job turns
-- it into Stock Entries; writing Stock Entries directly is done with the load options for a
-- product's own tables, not here.

CREATE TABLE `tabMES Production Report` (
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT CURRENT_TIMESTAMP(6),
  `modified` datetime(6) DEFAULT CURRENT_TIMESTAMP(6),
  `docstatus` int(1) NOT NULL DEFAULT 0,
  `work_order` varchar(140) DEFAULT NULL,
  `item_code` varchar(140) DEFAULT NULL,
  `produced_qty` decimal(21,9) DEFAULT NULL,
  `completed_on` datetime(6) DEFAULT NULL,
  `odoo_state` varchar(140) DEFAULT NULL,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Product names as Odoo translates them, for ERPNext's Chinese print formats: one row per item.
CREATE TABLE `tabOdoo Item Name` (
  `name` varchar(140) NOT NULL,
  `item_name_en` varchar(140) DEFAULT NULL,
  `item_name_zh` varchar(140) DEFAULT NULL,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

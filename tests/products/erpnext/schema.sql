-- ERPNext (Frappe Framework) manufacturing tables, as they stand on MariaDB: the tables a
-- plant's ERPNext site holds for work orders, their required items, items, units and the stock
-- entries that post production back. Modelled on ERPNext / Frappe v15 (doctypes Work Order,
-- Work Order Item, Item, UOM, Stock Entry, Stock Entry Detail in erpnext/manufacturing and
-- erpnext/stock, and Frappe's naming series table tabSeries); the standard Frappe columns
-- (name, creation, modified, modified_by, owner, docstatus, idx, child-table parent /
-- parentfield / parenttype) are kept, with the fields that matter for a sync and a few
-- realistic extras. Not every field of each doctype is here.
--
-- What an integrator must know, read from these tables:
--   * every table is named "tab" + the doctype name, spaces and capitals included;
--   * `name` is the primary key, a string (MFG-WO-2026-00001), never an integer id;
--   * `docstatus` 0 = draft, 1 = submitted, 2 = cancelled; `status` is the workflow state;
--   * `modified` is the change cursor; datetimes are naive local time of the site (e.g.
--     Asia/Shanghai), stored DATETIME(6);
--   * child rows (Work Order Item) point to their parent by name (`parent`), not by a foreign key;
--   * quantities are DECIMAL(21,9); units are referenced by UOM name (`stock_uom`);
--   * documents are named from naming series whose counters live in `tabSeries`.

CREATE TABLE `tabUOM` (
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT NULL,
  `modified` datetime(6) DEFAULT NULL,
  `modified_by` varchar(140) DEFAULT NULL,
  `owner` varchar(140) DEFAULT NULL,
  `docstatus` int(1) NOT NULL DEFAULT 0,
  `idx` int(8) NOT NULL DEFAULT 0,
  `enabled` int(1) NOT NULL DEFAULT 1,
  `uom_name` varchar(140) DEFAULT NULL,
  `must_be_whole_number` int(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (`name`),
  UNIQUE KEY `uom_name` (`uom_name`),
  KEY `modified` (`modified`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `tabItem` (
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT NULL,
  `modified` datetime(6) DEFAULT NULL,
  `modified_by` varchar(140) DEFAULT NULL,
  `owner` varchar(140) DEFAULT NULL,
  `docstatus` int(1) NOT NULL DEFAULT 0,
  `idx` int(8) NOT NULL DEFAULT 0,
  `naming_series` varchar(140) DEFAULT NULL,
  `item_code` varchar(140) DEFAULT NULL,
  `item_name` varchar(140) DEFAULT NULL,
  `item_group` varchar(140) DEFAULT NULL,
  `stock_uom` varchar(140) DEFAULT NULL,
  `disabled` int(1) NOT NULL DEFAULT 0,
  `is_stock_item` int(1) NOT NULL DEFAULT 1,
  `include_item_in_manufacturing` int(1) NOT NULL DEFAULT 1,
  `default_bom` varchar(140) DEFAULT NULL,
  `description` longtext DEFAULT NULL,
  PRIMARY KEY (`name`),
  UNIQUE KEY `item_code` (`item_code`),
  KEY `item_name` (`item_name`),
  KEY `modified` (`modified`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `tabWork Order` (
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT NULL,
  `modified` datetime(6) DEFAULT NULL,
  `modified_by` varchar(140) DEFAULT NULL,
  `owner` varchar(140) DEFAULT NULL,
  `docstatus` int(1) NOT NULL DEFAULT 0,
  `idx` int(8) NOT NULL DEFAULT 0,
  `naming_series` varchar(140) DEFAULT NULL,
  `status` varchar(140) DEFAULT 'Draft',
  `production_item` varchar(140) DEFAULT NULL,
  `item_name` varchar(140) DEFAULT NULL,
  `bom_no` varchar(140) DEFAULT NULL,
  `company` varchar(140) DEFAULT NULL,
  `qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `material_transferred_for_manufacturing` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `produced_qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `process_loss_qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `stock_uom` varchar(140) DEFAULT NULL,
  `wip_warehouse` varchar(140) DEFAULT NULL,
  `fg_warehouse` varchar(140) DEFAULT NULL,
  `planned_start_date` datetime(6) DEFAULT NULL,
  `planned_end_date` datetime(6) DEFAULT NULL,
  `actual_start_date` datetime(6) DEFAULT NULL,
  `actual_end_date` datetime(6) DEFAULT NULL,
  `expected_delivery_date` date DEFAULT NULL,
  `sales_order` varchar(140) DEFAULT NULL,
  `project` varchar(140) DEFAULT NULL,
  `description` text DEFAULT NULL,
  `amended_from` varchar(140) DEFAULT NULL,
  `_user_tags` text DEFAULT NULL,
  `_comments` text DEFAULT NULL,
  `_assign` text DEFAULT NULL,
  `_liked_by` text DEFAULT NULL,
  PRIMARY KEY (`name`),
  KEY `status` (`status`),
  KEY `production_item` (`production_item`),
  KEY `modified` (`modified`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `tabWork Order Item` (
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT NULL,
  `modified` datetime(6) DEFAULT NULL,
  `modified_by` varchar(140) DEFAULT NULL,
  `owner` varchar(140) DEFAULT NULL,
  `docstatus` int(1) NOT NULL DEFAULT 0,
  `idx` int(8) NOT NULL DEFAULT 0,
  `operation` varchar(140) DEFAULT NULL,
  `item_code` varchar(140) DEFAULT NULL,
  `item_name` varchar(140) DEFAULT NULL,
  `source_warehouse` varchar(140) DEFAULT NULL,
  `description` text DEFAULT NULL,
  `allow_alternative_item` int(1) NOT NULL DEFAULT 0,
  `include_item_in_manufacturing` int(1) NOT NULL DEFAULT 0,
  `required_qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `stock_uom` varchar(140) DEFAULT NULL,
  `rate` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `amount` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `transferred_qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `consumed_qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `returned_qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `available_qty_at_source_warehouse` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `available_qty_at_wip_warehouse` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `parent` varchar(140) DEFAULT NULL,
  `parentfield` varchar(140) DEFAULT NULL,
  `parenttype` varchar(140) DEFAULT NULL,
  PRIMARY KEY (`name`),
  KEY `parent` (`parent`),
  KEY `item_code` (`item_code`),
  KEY `modified` (`modified`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `tabStock Entry` (
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT NULL,
  `modified` datetime(6) DEFAULT NULL,
  `modified_by` varchar(140) DEFAULT NULL,
  `owner` varchar(140) DEFAULT NULL,
  `docstatus` int(1) NOT NULL DEFAULT 0,
  `idx` int(8) NOT NULL DEFAULT 0,
  `naming_series` varchar(140) DEFAULT NULL,
  `stock_entry_type` varchar(140) DEFAULT NULL,
  `purpose` varchar(140) DEFAULT NULL,
  `work_order` varchar(140) DEFAULT NULL,
  `company` varchar(140) DEFAULT NULL,
  `posting_date` date DEFAULT NULL,
  `posting_time` time(6) DEFAULT NULL,
  `set_posting_time` int(1) NOT NULL DEFAULT 0,
  `from_bom` int(1) NOT NULL DEFAULT 0,
  `bom_no` varchar(140) DEFAULT NULL,
  `fg_completed_qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `remarks` text DEFAULT NULL,
  `amended_from` varchar(140) DEFAULT NULL,
  -- A Custom Field added for the integration (Frappe prefixes custom fields with "custom_"):
  -- which Odoo report a stock entry posts, so a rerun finds it. No index: it is not unique.
  `custom_odoo_ref` varchar(140) DEFAULT NULL,
  PRIMARY KEY (`name`),
  KEY `work_order` (`work_order`),
  KEY `posting_date` (`posting_date`),
  KEY `modified` (`modified`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `tabStock Entry Detail` (
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT NULL,
  `modified` datetime(6) DEFAULT NULL,
  `modified_by` varchar(140) DEFAULT NULL,
  `owner` varchar(140) DEFAULT NULL,
  `docstatus` int(1) NOT NULL DEFAULT 0,
  `idx` int(8) NOT NULL DEFAULT 0,
  `s_warehouse` varchar(140) DEFAULT NULL,
  `t_warehouse` varchar(140) DEFAULT NULL,
  `item_code` varchar(140) DEFAULT NULL,
  `item_name` varchar(140) DEFAULT NULL,
  `is_finished_item` int(1) NOT NULL DEFAULT 0,
  `qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `uom` varchar(140) DEFAULT NULL,
  `conversion_factor` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `stock_uom` varchar(140) DEFAULT NULL,
  `transfer_qty` decimal(21,9) NOT NULL DEFAULT 0.000000000,
  `batch_no` varchar(140) DEFAULT NULL,
  `parent` varchar(140) DEFAULT NULL,
  `parentfield` varchar(140) DEFAULT NULL,
  `parenttype` varchar(140) DEFAULT NULL,
  PRIMARY KEY (`name`),
  KEY `item_code` (`item_code`),
  KEY `parent` (`parent`),
  KEY `modified` (`modified`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Naming series counters (Frappe's own table, no doctype): one row per series prefix, e.g.
-- "MAT-STE-2026-" for stock entries named "MAT-STE-.YYYY.-"; `current` is the last number used.
CREATE TABLE `tabSeries` (
  `name` varchar(100) NOT NULL,
  `current` int(10) NOT NULL DEFAULT 0,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Employees: `attendance_device_id` holds the badge (biometric / RF tag id) that shop-floor
-- systems know an operator by.
CREATE TABLE `tabEmployee` (
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT NULL,
  `modified` datetime(6) DEFAULT NULL,
  `modified_by` varchar(140) DEFAULT NULL,
  `owner` varchar(140) DEFAULT NULL,
  `docstatus` int(1) NOT NULL DEFAULT 0,
  `idx` int(8) NOT NULL DEFAULT 0,
  `naming_series` varchar(140) DEFAULT NULL,
  `first_name` varchar(140) DEFAULT NULL,
  `last_name` varchar(140) DEFAULT NULL,
  `employee_name` varchar(140) DEFAULT NULL,
  `status` varchar(140) DEFAULT 'Active',
  `company` varchar(140) DEFAULT NULL,
  `department` varchar(140) DEFAULT NULL,
  `attendance_device_id` varchar(140) DEFAULT NULL,
  `date_of_joining` date DEFAULT NULL,
  `relieving_date` date DEFAULT NULL,
  PRIMARY KEY (`name`),
  UNIQUE KEY `attendance_device_id` (`attendance_device_id`),
  KEY `status` (`status`),
  KEY `modified` (`modified`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The pipeline's own tables (PostgreSQL). Generated from etl/sync/pipeline_tables.py, which creates
-- them on every target database at the first run; tests/unit/test_pipeline_tables.py keeps this
-- file in step. etl_watermark: how far each flow has read. etl_ledger: one row per run.
-- etl_quarantine: rows that could not be loaded, with the reason, until they load.
-- etl_check: per run, each expectation and reconciliation with its failing row count.
-- etl_lookback_loaded: for flows with cursor.skip_loaded, the rows the next lookback re-reads
-- that the last run loaded (source key and cursor value).
-- etl_file_intake: for flows reading files, every file a run took (name, size, SHA-256, rows,
-- outcome), so that the same content loads once.
-- etl_api_posting: for flows with a web API target, what each posting key became there
-- (created, updated, found) and the remote id; 'sending' rows mark a send whose answer may be lost.
-- etl_file_export: for flows with a file target, every file a run wrote (name, SHA-256, rows,
-- window), in the run's transaction.

CREATE TABLE etl_api_posting (
	flow VARCHAR(63) NOT NULL, 
	posting_key VARCHAR(255) NOT NULL, 
	how VARCHAR(10) NOT NULL, 
	remote_id VARCHAR(200), 
	payload_hash VARCHAR(64) NOT NULL, 
	run_id VARCHAR(36) NOT NULL, 
	posted_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (flow, posting_key, how)
);

CREATE TABLE etl_check (
	id SERIAL NOT NULL, 
	run_id VARCHAR(36) NOT NULL, 
	flow VARCHAR(63) NOT NULL, 
	checked_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	expectation_type VARCHAR(100), 
	suite VARCHAR(100), 
	action VARCHAR(10) NOT NULL, 
	rows_checked INTEGER NOT NULL, 
	rows_failed INTEGER NOT NULL, 
	success BOOLEAN NOT NULL, 
	sample_keys TEXT, 
	detail TEXT, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_etl_check_flow_checked ON etl_check (flow, checked_at);

CREATE INDEX ix_etl_check_run ON etl_check (run_id);

CREATE TABLE etl_file_export (
	flow VARCHAR(63) NOT NULL, 
	file_name VARCHAR(255) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	row_count INTEGER NOT NULL, 
	run_id VARCHAR(36) NOT NULL, 
	window_from VARCHAR(64), 
	window_to VARCHAR(64), 
	written_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (flow, file_name)
);

CREATE TABLE etl_file_intake (
	run_id VARCHAR(36) NOT NULL, 
	file_name VARCHAR(255) NOT NULL, 
	flow VARCHAR(63) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	size_bytes BIGINT NOT NULL, 
	mtime_ns BIGINT NOT NULL, 
	row_count INTEGER NOT NULL, 
	outcome VARCHAR(10) NOT NULL, 
	reason TEXT, 
	recorded_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (run_id, file_name)
);

CREATE INDEX ix_etl_file_intake_flow_sha256 ON etl_file_intake (flow, sha256);

CREATE TABLE etl_ledger (
	run_id VARCHAR(36) NOT NULL, 
	flow VARCHAR(63) NOT NULL, 
	direction VARCHAR(16) NOT NULL, 
	started_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	finished_at TIMESTAMP WITHOUT TIME ZONE, 
	duration_s NUMERIC(12, 3), 
	window_from VARCHAR(64), 
	window_to VARCHAR(64), 
	rows_read INTEGER NOT NULL, 
	rows_retried INTEGER NOT NULL, 
	rows_loaded INTEGER NOT NULL, 
	rows_unchanged INTEGER NOT NULL, 
	rows_quarantined INTEGER NOT NULL, 
	rows_new_in_quarantine INTEGER NOT NULL, 
	rows_released INTEGER NOT NULL, 
	rows_deleted INTEGER NOT NULL, 
	quarantine_backlog INTEGER NOT NULL, 
	outcome VARCHAR(16) NOT NULL, 
	options TEXT, 
	error TEXT, 
	PRIMARY KEY (run_id)
);

CREATE INDEX ix_etl_ledger_flow_started ON etl_ledger (flow, started_at);

CREATE TABLE etl_lookback_loaded (
	flow VARCHAR(63) NOT NULL, 
	source_key VARCHAR(512) NOT NULL, 
	cursor_value TEXT NOT NULL
);

CREATE INDEX ix_etl_lookback_loaded_flow ON etl_lookback_loaded (flow);

CREATE TABLE etl_quarantine (
	id SERIAL NOT NULL, 
	flow VARCHAR(63) NOT NULL, 
	source_key VARCHAR(512) NOT NULL, 
	payload TEXT NOT NULL, 
	payload_kind VARCHAR(8) NOT NULL, 
	reason TEXT NOT NULL, 
	status VARCHAR(10) NOT NULL, 
	attempts INTEGER NOT NULL, 
	first_seen_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	last_seen_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	first_run_id VARCHAR(36) NOT NULL, 
	last_run_id VARCHAR(36) NOT NULL, 
	released_at TIMESTAMP WITHOUT TIME ZONE, 
	released_run_id VARCHAR(36), 
	PRIMARY KEY (id)
);

CREATE INDEX ix_etl_quarantine_flow_status_key ON etl_quarantine (flow, status, source_key);

CREATE TABLE etl_watermark (
	flow VARCHAR(63) NOT NULL, 
	cursor_value VARCHAR(64), 
	cursor_type VARCHAR(16), 
	keyset_checked_at TIMESTAMP WITHOUT TIME ZONE, 
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	run_id VARCHAR(36) NOT NULL, 
	PRIMARY KEY (flow)
);

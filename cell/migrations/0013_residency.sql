-- Residency receipts: every audit of this cell's stores (cell/residency/audit.py)
-- is kept as a report signed by the cell (Ed25519) and hash-chained to the one
-- before it (cell/residency/receipts.py), so an auditor holding the chain and
-- the cell's public key can tell that no report was altered, dropped or
-- reordered.
--
-- hash = sha256 of the canonical JSON of {seq, prev_hash, body}; signature is
-- over the same bytes; prev_hash of the first report is 64 zeros. The audited
-- project is `audited_project`, not `project_id`, on purpose: the audit finds
-- tenant tables by their project_id column, and a report must outlive the
-- project it covered (a purge after a move must not delete the receipts).

CREATE TABLE residency_reports (
    seq              BIGINT PRIMARY KEY CHECK (seq > 0),
    created_at       TIMESTAMPTZ NOT NULL,
    scope            TEXT NOT NULL CHECK (scope IN ('cell', 'project')),
    audited_project  UUID,
    body             JSONB NOT NULL,
    prev_hash        CHAR(64) NOT NULL,
    hash             CHAR(64) NOT NULL UNIQUE,
    signature        TEXT NOT NULL,
    public_key       TEXT NOT NULL,
    CHECK ((scope = 'project') = (audited_project IS NOT NULL))
);

-- A project's latest report, for GET /v1/projects/{id}/residency.
CREATE INDEX idx_residency_reports_project ON residency_reports(audited_project, seq DESC)
    WHERE audited_project IS NOT NULL;

-- The chain is append-only: the application never changes or removes a report.
-- This stops mistakes, not a superuser; the hash chain and the signatures are
-- what make tampering visible.
CREATE FUNCTION residency_reports_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'residency_reports is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER residency_reports_append_only
    BEFORE UPDATE OR DELETE ON residency_reports
    FOR EACH ROW EXECUTE FUNCTION residency_reports_append_only();

CREATE TRIGGER residency_reports_no_truncate
    BEFORE TRUNCATE ON residency_reports
    FOR EACH STATEMENT EXECUTE FUNCTION residency_reports_append_only();

-- The audit log: append-only, hash-chained security events (see payapi/audit.py).
--
-- Every row commits to its predecessor: hash = sha256(canonical JSON of seq, occurred_at,
-- type, actor, subject, details, prev_hash), and prev_hash is the previous row's hash
-- (64 zeros for seq 1). seq is assigned by the writer under a session advisory lock, so
-- it is gap-free; the primary key refuses a second writer that bypasses the lock.
--
-- The triggers below make UPDATE, DELETE and TRUNCATE fail for ordinary use. They are a
-- guard rail, not the protection: a superuser can disable them, which is why tampering is
-- detected by `payapi audit verify` from the hashes and the chain head kept outside this
-- database.

CREATE TABLE IF NOT EXISTS audit_events (
    seq         bigint      PRIMARY KEY CHECK (seq > 0),
    occurred_at timestamptz NOT NULL,
    type        text        NOT NULL CHECK (type <> ''),
    actor       text        NOT NULL CHECK (actor <> ''),
    subject     text,
    details     jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    prev_hash   text        NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash        text        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);

CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

DROP TRIGGER IF EXISTS audit_events_no_change ON audit_events;
CREATE TRIGGER audit_events_no_change
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events;
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- Change tracking for incremental vault backups (payapi.backup.vault_backup).
--
-- Every row written to or deleted from a backed-up table leaves one row in vault_changes:
-- the table, the row's primary key (as JSON) and the id of the writing transaction. An
-- incremental backup reads, in its own snapshot, the keys changed by every transaction
-- its parent's snapshot did not see, and stores those rows as they are now (or, for keys
-- whose row is gone, a tombstone). Deletions done by ON DELETE CASCADE fire row triggers
-- too, so a variable removed by a replaced policy is recorded like any other delete.
--
-- Invariants:
-- * vault_changes holds keys only (ids, versions): never a secret, a digest or a value.
-- * Transaction ids (xid8) and snapshots, not a sequence, decide what an incremental
--   holds: a sequence number is taken when a row is written, not when its transaction
--   commits, so "everything after N" would miss a slow transaction that committed later.
-- * A session with payapi.vault_restore = 'on' (a restore, inside its own transaction)
--   is not tracked: a restore starts a new lineage, and the next incremental after it is
--   taken as a full backup.
-- * vault_backup_state.pruned_below: change rows of transactions below it were pruned; an
--   incremental whose parent's snapshot xmin is below it cannot be built (it becomes full).

CREATE TABLE vault_changes (
    change_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_name text NOT NULL,
    pk         jsonb,           -- NULL: the whole table (TRUNCATE)
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vault_changes_xid ON vault_changes (xid);

CREATE TABLE vault_backup_state (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    lineage      text NOT NULL DEFAULT gen_random_uuid()::text,
    pruned_below xid8 NOT NULL DEFAULT '0'::xid8,
    restored_at  timestamptz,
    restored_from text
);
INSERT INTO vault_backup_state DEFAULT VALUES;

-- Trigger arguments are the table's primary-key columns.
CREATE FUNCTION vault_track_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    col    text;
    old_pk jsonb;
    new_pk jsonb;
BEGIN
    IF coalesce(current_setting('payapi.vault_restore', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO vault_changes (table_name, pk) VALUES (TG_TABLE_NAME, NULL);
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_pk := '{}'::jsonb;
        FOREACH col IN ARRAY TG_ARGV LOOP
            old_pk := old_pk || jsonb_build_object(col, to_jsonb(OLD) -> col);
        END LOOP;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_pk := '{}'::jsonb;
        FOREACH col IN ARRAY TG_ARGV LOOP
            new_pk := new_pk || jsonb_build_object(col, to_jsonb(NEW) -> col);
        END LOOP;
    END IF;
    IF old_pk IS NOT NULL AND old_pk IS DISTINCT FROM new_pk THEN
        INSERT INTO vault_changes (table_name, pk) VALUES (TG_TABLE_NAME, old_pk);
    END IF;
    IF new_pk IS NOT NULL THEN
        INSERT INTO vault_changes (table_name, pk) VALUES (TG_TABLE_NAME, new_pk);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER vault_meta_track AFTER INSERT OR UPDATE OR DELETE ON vault_meta
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('name');
CREATE TRIGGER accounts_track AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('account');
CREATE TRIGGER roles_track AFTER INSERT OR UPDATE OR DELETE ON roles
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('role_id');
CREATE TRIGGER resources_track AFTER INSERT OR UPDATE OR DELETE ON resources
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('resource_id');
CREATE TRIGGER credentials_track AFTER INSERT OR UPDATE OR DELETE ON credentials
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('role_id');
CREATE TRIGGER role_memberships_track AFTER INSERT OR UPDATE OR DELETE ON role_memberships
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('role_id', 'member_id', 'ownership');
CREATE TRIGGER permissions_track AFTER INSERT OR UPDATE OR DELETE ON permissions
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('resource_id', 'role_id', 'privilege');
CREATE TRIGGER annotations_track AFTER INSERT OR UPDATE OR DELETE ON annotations
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('resource_id', 'name');
CREATE TRIGGER policy_versions_track AFTER INSERT OR UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('resource_id', 'version');
CREATE TRIGGER secrets_track AFTER INSERT OR UPDATE OR DELETE ON secrets
    FOR EACH ROW EXECUTE FUNCTION vault_track_change('resource_id', 'version');

CREATE TRIGGER vault_meta_track_truncate AFTER TRUNCATE ON vault_meta
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();
CREATE TRIGGER accounts_track_truncate AFTER TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();
CREATE TRIGGER roles_track_truncate AFTER TRUNCATE ON roles
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();
CREATE TRIGGER resources_track_truncate AFTER TRUNCATE ON resources
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();
CREATE TRIGGER credentials_track_truncate AFTER TRUNCATE ON credentials
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();
CREATE TRIGGER role_memberships_track_truncate AFTER TRUNCATE ON role_memberships
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();
CREATE TRIGGER permissions_track_truncate AFTER TRUNCATE ON permissions
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();
CREATE TRIGGER annotations_track_truncate AFTER TRUNCATE ON annotations
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();
CREATE TRIGGER policy_versions_track_truncate AFTER TRUNCATE ON policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();
CREATE TRIGGER secrets_track_truncate AFTER TRUNCATE ON secrets
    FOR EACH STATEMENT EXECUTE FUNCTION vault_track_change();

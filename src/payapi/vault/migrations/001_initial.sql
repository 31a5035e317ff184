-- The vault's schema: Conjur's model (roles, resources, memberships, permissions,
-- annotations, policy versions, secrets) reduced to what this vault serves.
--
-- Invariants:
-- * secrets.sealed is AES-256-GCM ciphertext; no column anywhere holds a secret value,
--   an API key or a token in clear. credentials.api_key_sha256 is a digest.
-- * Deleting a policy's resource cascades to every record it declared (policy_id), and
--   deleting a resource cascades to its secrets, annotations and permissions.
-- * The data key itself is never here; vault_meta holds a one-way check value of it.
-- * Foreign keys to a policy are checked at commit: one policy load creates a policy and
--   its records in whatever order the document lists them.

CREATE TABLE vault_meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE accounts (
    account    text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE resources (
    resource_id text PRIMARY KEY,
    account     text NOT NULL REFERENCES accounts ON DELETE CASCADE,
    kind        text NOT NULL,
    identifier  text NOT NULL,
    owner_id    text NOT NULL,
    policy_id   text REFERENCES resources (resource_id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (resource_id = account || ':' || kind || ':' || identifier)
);
CREATE INDEX resources_account_kind ON resources (account, kind);
CREATE INDEX resources_policy ON resources (policy_id);
CREATE INDEX resources_owner ON resources (owner_id);

CREATE TABLE roles (
    role_id    text PRIMARY KEY,
    account    text NOT NULL REFERENCES accounts ON DELETE CASCADE,
    policy_id  text REFERENCES resources (resource_id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX roles_policy ON roles (policy_id);

-- A resource's owner is a role; deleting the role deletes what it owns (as Conjur does).
ALTER TABLE resources
    ADD CONSTRAINT resources_owner_fkey FOREIGN KEY (owner_id)
    REFERENCES roles (role_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE credentials (
    role_id        text PRIMARY KEY REFERENCES roles ON DELETE CASCADE,
    api_key_sha256 bytea NOT NULL CHECK (length(api_key_sha256) = 32),
    rotated_at     timestamptz NOT NULL DEFAULT now()
);

-- member_id is a member of role_id (it holds role_id's privileges). The owner of a role
-- is a member of it with ownership = true.
CREATE TABLE role_memberships (
    role_id      text NOT NULL REFERENCES roles ON DELETE CASCADE,
    member_id    text NOT NULL REFERENCES roles ON DELETE CASCADE,
    admin_option boolean NOT NULL DEFAULT false,
    ownership    boolean NOT NULL DEFAULT false,
    policy_id    text REFERENCES resources (resource_id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (role_id, member_id, ownership)
);
CREATE INDEX role_memberships_member ON role_memberships (member_id);

CREATE TABLE permissions (
    resource_id text NOT NULL REFERENCES resources ON DELETE CASCADE,
    role_id     text NOT NULL REFERENCES roles ON DELETE CASCADE,
    privilege   text NOT NULL,
    policy_id   text REFERENCES resources (resource_id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (resource_id, role_id, privilege)
);
CREATE INDEX permissions_role ON permissions (role_id);

CREATE TABLE annotations (
    resource_id text NOT NULL REFERENCES resources ON DELETE CASCADE,
    name        text NOT NULL,
    value       text NOT NULL,
    policy_id   text REFERENCES resources (resource_id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (resource_id, name)
);

CREATE TABLE policy_versions (
    resource_id   text NOT NULL REFERENCES resources ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version > 0),
    role_id       text NOT NULL,
    policy_text   text NOT NULL,
    policy_sha256 text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_id, version)
);

CREATE TABLE secrets (
    resource_id text NOT NULL REFERENCES resources ON DELETE CASCADE,
    version     integer NOT NULL CHECK (version > 0),
    sealed      bytea NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_id, version)
);

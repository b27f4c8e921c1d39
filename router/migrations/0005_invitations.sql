-- Router control schema, version 5: invitations to a project's team. Adding a
-- member by email sends a one-time link instead of attaching whoever signed up
-- with that address: the account that accepts must hold the address and the
-- token, which only the mailbox received. The token is stored only as its
-- SHA-256; an invitation is open until accepted, revoked or expired.

CREATE TABLE project_invitations (
    id           UUID PRIMARY KEY,
    project_id   UUID NOT NULL REFERENCES project_directory(id) ON DELETE CASCADE,
    email        VARCHAR(255) NOT NULL,   -- lower-cased, as admin_users.email
    role         membership_role NOT NULL,
    token_hash   VARCHAR(64) NOT NULL UNIQUE,
    invited_by   UUID REFERENCES admin_users(id) ON DELETE SET NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    accepted_at  TIMESTAMPTZ,
    accepted_by  UUID REFERENCES admin_users(id) ON DELETE SET NULL,
    revoked_at   TIMESTAMPTZ
);

-- One open invitation per address and project: inviting again replaces it.
CREATE UNIQUE INDEX uq_project_invitations_open ON project_invitations(project_id, email)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;

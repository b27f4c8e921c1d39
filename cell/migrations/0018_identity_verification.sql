-- Identity verification, version 18. A project may hold an identity secret
-- (sealed with the cell's key, cell/secrets.py; shown once at creation): the
-- customer's server signs each end user's external id with it, and the page
-- passes that `user_hash` along with `user`. Only a `user` with a valid hash
-- may change a stored identity (email, name, avatar, traits); an end user
-- never proven so is `verified = false`, and once a project has a secret its
-- notification emails go only to verified end users.

ALTER TABLE projects ADD COLUMN identity_secret TEXT;

ALTER TABLE end_users ADD COLUMN verified BOOLEAN NOT NULL DEFAULT false;

-- A vote cast by a verified end user counts once per person, whatever the
-- session; other votes count once per session as before.
ALTER TABLE feedback_votes ADD COLUMN verified BOOLEAN NOT NULL DEFAULT false;
CREATE UNIQUE INDEX uq_feedback_votes_verified_user ON feedback_votes(feedback_item_id, user_id) WHERE verified;

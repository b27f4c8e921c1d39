-- Demand that moves with confirmed duplicate groups (issue 15): when a person
-- confirms that interactions are duplicates, the end users who reported a
-- confirmed member of a group count as demand on every feedback item linked
-- to a member of that group (cell/feedback/demand.py). That demand is kept as
-- votes with `from_group`: no session (so the public board's `voted`, and a
-- session's own vote, are untouched), at most one per end user and item (the
-- index below), and none for an end user who voted for the item themselves
-- (their own vote counts instead). `vote_count` stays the number of an item's
-- vote rows, so a reader, a move and the counters' reconciliation need no
-- second rule. An unmerge, an unlink or an erasure deletes the rows it no
-- longer justifies, in the same transaction.

ALTER TABLE feedback_votes ADD COLUMN from_group BOOLEAN NOT NULL DEFAULT false;
CREATE UNIQUE INDEX uq_feedback_votes_group_user ON feedback_votes(feedback_item_id, user_id) WHERE from_group;

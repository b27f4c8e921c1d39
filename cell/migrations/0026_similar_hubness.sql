-- Hubness-corrected suggestions (issue 15): `GET …/similar` ranks a
-- project's interactions by cos(q, x) - r(x)/2 (CSLS), where r(x) is the mean
-- cosine of x to its nearest neighbours in the project. A generic report
-- ("the app is slow", a short chat) sits near everything and would otherwise
-- crowd the top of every list; r(x) says how much of its closeness is that.
--
-- neighbour_cosines: the cosines of the row to its nearest neighbours in the
-- project (of its model; best first, at most cell/enrichment/index.py's
-- HUB_K), kept up to date as the enrichment job stores vectors in the HNSW
-- column: a new row gets its own list, and the rows near it take its cosine
-- into theirs. (The exact scan of vectors kept as bytes computes its
-- candidates' hubness from the vectors it reads, so those rows have none.)
-- hubness: their mean, r(x), read by the query. NULL for rows indexed before
-- this migration until they are stored again (re-signing does): the query
-- then gives them the candidates' mean, so they are neither favoured nor
-- pushed down.

ALTER TABLE interaction_vectors ADD COLUMN neighbour_cosines REAL[];
ALTER TABLE interaction_vectors ADD COLUMN hubness REAL;

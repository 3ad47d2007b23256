-- A master's request distributor asks for the oldest pending requests, a few
-- at a time (BuildRequestFilter::limit), and counts them only up to its
-- backlog bound: both read the pending requests in id order, which the index
-- of 0004 (by builder) does not give. Found through this index, the oldest
-- pending requests cost the same however long the history of completed ones.
-- Queries ask for them as `NOT complete`, the index's condition.
CREATE INDEX buildrequests_pending_by_id ON buildrequests (id) WHERE NOT complete;

-- Where the billing projection stands in each stream it reads.
--
-- Written in the same transaction as the rows an applied batch produces, so the view and its
-- position never disagree: after a crash the projection resumes at last_offset + 1 and an event
-- at or below last_offset is never applied twice.
CREATE TABLE positions (
    stream      text PRIMARY KEY,
    last_offset bigint NOT NULL CHECK (last_offset >= -1)
);

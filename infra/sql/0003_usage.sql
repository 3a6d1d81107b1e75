-- The usage ledger: one row per settled request, and its incrementally maintained aggregates.
--
-- The ledger is keyed by the id of the ReservationSettled event that produced the row, so the
-- same settlement can never be counted twice, even if it reaches the log twice. The aggregates
-- are incremented, in the same statement, only by the ledger rows that were actually inserted.
--
-- `day` is the UTC date of settlement; `period` (the billing period) is the first day of its UTC
-- calendar month.
CREATE TABLE usage_ledger (
    event_id          uuid PRIMARY KEY,
    request_id        uuid NOT NULL,
    tenant_id         text NOT NULL,
    model             text NOT NULL,
    reserved_tokens   bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    settled_at        timestamptz NOT NULL,
    day               date NOT NULL,
    period            date NOT NULL CHECK (extract(day FROM period) = 1)
);

CREATE INDEX usage_ledger_tenant_period
    ON usage_ledger (tenant_id, period, model, settled_at)
    INCLUDE (prompt_tokens, completion_tokens);

CREATE TABLE usage_daily (
    tenant_id         text NOT NULL,
    day               date NOT NULL,
    model             text NOT NULL,
    requests          bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, model)
);

CREATE TABLE usage_period (
    tenant_id         text NOT NULL,
    period            date NOT NULL CHECK (extract(day FROM period) = 1),
    model             text NOT NULL,
    requests          bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    PRIMARY KEY (tenant_id, period, model)
);

-- One row per request: its whole lifecycle, folded from the events of both streams.
--
-- Each group of columns is written by exactly one event type (its *_at column marks the group as
-- set) and the first event of that type wins. Every event type lives on one stream, read in
-- offset order, so the row is the same whatever the interleaving of the `requests` and `quota`
-- streams or the way the log was cut into batches.
CREATE TABLE requests (
    request_id                uuid PRIMARY KEY,
    tenant_id                 text NOT NULL,
    model                     text,
    -- tokens held by the reservation (TokensReserved; also carried by its settlement/release/expiry)
    reserved_tokens           bigint,

    -- InferenceRequested (stream `requests`)
    requested_at              timestamptz,
    estimated_prompt_tokens   bigint,
    max_tokens                bigint,
    priority                  smallint,
    idempotency_key           text,

    -- TokensReserved (stream `quota`)
    reserved_at               timestamptz,
    expires_at                timestamptz,

    -- RequestRejected (stream `quota`)
    rejected_at               timestamptz,
    reject_reason             text,
    reject_detail             text,
    rejected_tokens           bigint,
    retry_after_s             double precision,

    -- InferenceCompleted (stream `requests`): what the model reported
    completed_at              timestamptz,
    model_version             text,
    prompt_tokens             bigint,
    completion_tokens         bigint,
    latency_ms                double precision,

    -- InferenceFailed (stream `requests`)
    failed_at                 timestamptz,
    failure_reason            text,
    retryable                 boolean,

    -- ReservationSettled (stream `quota`): what was charged
    settled_at                timestamptz,
    settled_prompt_tokens     bigint,
    settled_completion_tokens bigint,

    -- ReservationReleased (stream `quota`)
    released_at               timestamptz,
    release_reason            text,

    -- ReservationExpired (stream `quota`)
    expired_at                timestamptz,

    estimated_tokens bigint GENERATED ALWAYS AS (estimated_prompt_tokens + max_tokens) STORED,
    -- The furthest stage reached; a pure function of the row, so it never depends on arrival order.
    status text GENERATED ALWAYS AS (
        CASE
            WHEN settled_at IS NOT NULL THEN 'settled'
            WHEN released_at IS NOT NULL THEN 'released'
            WHEN expired_at IS NOT NULL THEN 'expired'
            WHEN rejected_at IS NOT NULL THEN 'rejected'
            WHEN completed_at IS NOT NULL THEN 'completed'
            WHEN failed_at IS NOT NULL THEN 'failed'
            WHEN reserved_at IS NOT NULL THEN 'reserved'
            ELSE 'requested'
        END
    ) STORED
);

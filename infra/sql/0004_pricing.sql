-- Prices, and invoices priced at the price in force when each request was settled.
--
-- PriceSet events arrive on the `catalog` stream, independently of the settlements on the
-- `quota` streams, so a settlement may be projected before the price that governs it. Nothing
-- priced is therefore stored: invoice lines are a view that joins the ledger with the price
-- history at query time, and are right whatever order the two streams were applied in.
--
-- A price is in force from its PriceSet's occurred_at (inclusive) until the next price of the
-- same model (exclusive). Two PriceSets of one model with the same occurred_at: the later one in
-- the catalog stream wins (a correction).
CREATE TABLE prices (
    model             text NOT NULL,
    effective_from    timestamptz NOT NULL,
    prompt_per_1k     numeric(18, 9) NOT NULL CHECK (prompt_per_1k >= 0),
    completion_per_1k numeric(18, 9) NOT NULL CHECK (completion_per_1k >= 0),
    currency          text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    event_id          uuid NOT NULL,
    PRIMARY KEY (model, effective_from)
);

CREATE VIEW price_intervals AS
SELECT
    model,
    effective_from AS valid_from,
    lead(effective_from) OVER (PARTITION BY model ORDER BY effective_from) AS valid_to,
    prompt_per_1k,
    completion_per_1k,
    currency
FROM prices;

-- One line per (tenant, period, model, price in force); the price columns are NULL for usage
-- settled before the model had any price. Filtering on tenant_id and period is pushed down to the
-- ledger's index.
CREATE VIEW invoice_lines AS
SELECT
    l.tenant_id,
    l.period,
    l.model,
    p.valid_from,
    p.valid_to,
    p.prompt_per_1k,
    p.completion_per_1k,
    p.currency,
    count(*)::bigint AS requests,
    sum(l.prompt_tokens)::bigint AS prompt_tokens,
    sum(l.completion_tokens)::bigint AS completion_tokens
FROM usage_ledger AS l
LEFT JOIN price_intervals AS p
    ON p.model = l.model
    AND l.settled_at >= p.valid_from
    AND (p.valid_to IS NULL OR l.settled_at < p.valid_to)
GROUP BY
    l.tenant_id, l.period, l.model,
    p.valid_from, p.valid_to, p.prompt_per_1k, p.completion_per_1k, p.currency;

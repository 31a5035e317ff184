-- Payments, and the idempotency keys that make retries safe.
--
-- An idempotency key is unique per client, enforced here (not in application code), so
-- that two SAPI replicas racing on one key still create exactly one payment. A NULL key
-- (a request without Idempotency-Key) never conflicts. request_hash is the SHA-256 of the
-- canonical request body: a retry with the same key and a different body is refused.
-- Keys are purged (set to NULL) after the retention period; the payment stays.

CREATE TABLE payments (
    id              uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id       text          NOT NULL,
    amount          numeric(12,2) NOT NULL CHECK (amount > 0),
    currency        char(3)       NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reference       text          NOT NULL CHECK (char_length(reference) BETWEEN 1 AND 64),
    status          text          NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    created_at      timestamptz   NOT NULL DEFAULT now(),
    idempotency_key text          NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    request_hash    text          NULL,
    CONSTRAINT payments_client_idempotency_key UNIQUE (client_id, idempotency_key)
);

-- The purge of old keys reads only rows that still hold a key.
CREATE INDEX payments_idempotency_created_at
    ON payments (created_at) WHERE idempotency_key IS NOT NULL;

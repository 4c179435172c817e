-- Business data the transactions pipeline enriches events with.
CREATE TABLE customers (
    customer_id  bigint PRIMARY KEY,
    name         text NOT NULL,
    document     text NOT NULL,            -- CPF/CNPJ, stored masked in demo data
    segment      text NOT NULL,            -- retail | private | business
    risk_score   smallint NOT NULL CHECK (risk_score BETWEEN 0 AND 1000)
);

CREATE TABLE accounts (
    account_id   text PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers,
    status       text NOT NULL,            -- active | blocked | closed
    opened_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_customer_idx ON accounts (customer_id);

-- Order totals of the sales agent: one row per order, upserted by order number.
CREATE TABLE sales (
    order_number  integer PRIMARY KEY,
    total         numeric NOT NULL,
    processed_at  timestamp NOT NULL       -- UTC; the time of the batch that stored this total
);

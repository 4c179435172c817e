-- Change data capture of the account cache (issue 16): the tables Debezium's PostgreSQL
-- connector streams, through the pgoutput plugin (publication.autocreate.mode=disabled in
-- deploy/connect/accounts-cdc.json: the publication is the schema's, made here). The
-- replication slot belongs to the connector (slot.name), made by it on its first start.
CREATE PUBLICATION txpipe_cache FOR TABLE accounts, customers;

-- Schemas of the platform, one per layer of the data flow.
create schema if not exists staging;        -- raw CSV rows, then typed and hashed rows of the current batch
create schema if not exists raw_vault;      -- Data Vault 2.0: hubs, links, insert-only satellites
create schema if not exists business_vault; -- point-in-time table and the business views
create schema if not exists audit;          -- batches, quarantine, reconciliation, applied migrations

create extension if not exists pg_trgm;            -- prefix/substring search on names and e-mails
create extension if not exists pg_stat_statements; -- query statistics for tuning

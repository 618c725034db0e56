CREATE SCHEMA IF NOT EXISTS "edfi_live";
CREATE OR REPLACE VIEW "edfi_live"."studentschoolassociation" AS SELECT "studentusi", "schoolid", "entrydate", "entrygradeleveldescriptorid", "exitwithdrawdate", "discriminator", "id", "lastmodifieddate" FROM "edfi"."studentschoolassociation" WHERE edfi_cdc_deleted_at IS NULL WITH NO SCHEMA BINDING

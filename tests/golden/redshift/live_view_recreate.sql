DROP VIEW IF EXISTS "edfi_live"."studentschoolassociation";
CREATE VIEW "edfi_live"."studentschoolassociation" AS SELECT "studentusi", "schoolid", "entrydate", "entrygradeleveldescriptorid", "exitwithdrawdate", "discriminator", "id", "lastmodifieddate" FROM "edfi"."studentschoolassociation" WHERE edfi_cdc_deleted_at IS NULL

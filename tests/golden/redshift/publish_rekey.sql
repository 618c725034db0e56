DELETE FROM "edfi"."studentschoolassociation";
ALTER TABLE "edfi"."studentschoolassociation" DROP CONSTRAINT "studentschoolassociation_pkey";
ALTER TABLE "edfi"."studentschoolassociation" ADD PRIMARY KEY ("schoolid", "entrydate", "studentusi");
INSERT INTO "edfi"."studentschoolassociation" ("studentusi", "schoolid", "entrydate", "entrygradeleveldescriptorid", "exitwithdrawdate", "discriminator", "id", "lastmodifieddate") SELECT "studentusi", "schoolid", "entrydate", "entrygradeleveldescriptorid", "exitwithdrawdate", "discriminator", "id", "lastmodifieddate" FROM "edfi_cdc_shadow"."edfi_ods__studentschoolassociation";
DROP TABLE "edfi_cdc_shadow"."edfi_ods__studentschoolassociation"

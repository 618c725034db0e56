CREATE TABLE "edfi"."studentschoolassociation" (
    "studentusi" integer NOT NULL,
    "schoolid" integer NOT NULL,
    "entrydate" date NOT NULL,
    "entrygradeleveldescriptorid" integer NOT NULL,
    "exitwithdrawdate" date,
    "discriminator" varchar(384),
    "id" char(36),
    "lastmodifieddate" timestamp,
    edfi_cdc_deleted_at timestamp,
    PRIMARY KEY ("schoolid", "entrydate", "studentusi")
)

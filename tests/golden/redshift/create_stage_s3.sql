CREATE TEMP TABLE edfi_cdc_stage_7 (
    "studentusi" integer,
    "schoolid" integer,
    "entrydate" date,
    "entrygradeleveldescriptorid" integer,
    "exitwithdrawdate" date,
    "discriminator" varchar(384),
    "id" char(36),
    "lastmodifieddate" timestamp,
    edfi_cdc_op char(1) NOT NULL,
    edfi_cdc_version bigint NOT NULL
)
DISTKEY ("studentusi")

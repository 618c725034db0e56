COPY edfi_cdc_stage_7 ("studentusi", "schoolid", "entrydate", "entrygradeleveldescriptorid", "exitwithdrawdate", "discriminator", "id", "lastmodifieddate", edfi_cdc_op, edfi_cdc_version)
FROM 's3://reporting-bucket/edfi-cdc/edfi-ods/v00000000000000001234/edfi.studentschoolassociation/manifest'
IAM_ROLE 'arn:aws:iam::123456789012:role/edfi-cdc-copy'
FORMAT AS CSV
GZIP
MANIFEST
NULL AS '\\N'
TIMEFORMAT 'auto'
DATEFORMAT 'auto'
COMPUPDATE OFF
STATUPDATE OFF

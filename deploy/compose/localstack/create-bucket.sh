#!/bin/bash
# LocalStack ready hook: the bucket for the redshift sink's S3 mode (S3_BUCKET).
awslocal s3 mb s3://edfi-cdc

"""botocore's SigV4 presigned URL of MSK's `kafka-cluster:Connect`, the request an MSK IAM token
carries, signed at a given time: an independent signer to check edfi-cdc's tokens against.

Usage: presign.py REGION ACCESS_KEY SECRET_KEY SESSION_TOKEN EPOCH_SECONDS
Prints the presigned URL.
"""
import datetime
import sys
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials

region, access_key, secret_key, token, epoch = sys.argv[1:6]
fixed = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).replace(tzinfo=None)


class Fixed(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return fixed

    @classmethod
    def now(cls, tz=None):
        return fixed.replace(tzinfo=tz) if tz else fixed


with mock.patch.object(botocore.auth.datetime, "datetime", Fixed):
    request = botocore.awsrequest.AWSRequest(
        method="GET", url=f"https://kafka.{region}.amazonaws.com/",
        params={"Action": "kafka-cluster:Connect"})
    credentials = botocore.credentials.Credentials(access_key, secret_key, token)
    botocore.auth.SigV4QueryAuth(credentials, "kafka-cluster", region, expires=900).add_auth(request)
    print(request.prepare().url)

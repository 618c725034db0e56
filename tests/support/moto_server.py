"""An S3/Kinesis API server (moto) for one test: listens on a free loopback port, prints
`moto ready on HOST:PORT`, and exits when its standard input closes (the test ended or died).

One correction to moto's S3: it names the root element of the CompleteMultipartUpload reply
`CompleteMultipartUploadResponse`, where S3 (and its SDKs, which check) use
`CompleteMultipartUploadResult`; the reply is renamed on its way out."""
import sys
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

moto_app = DomainDispatcherApplication(create_backend_app)


def app(environ, start_response):
    completing = environ["REQUEST_METHOD"] == "POST" and "uploadId=" in environ.get("QUERY_STRING", "")
    if not completing:
        return moto_app(environ, start_response)
    reply = {}

    def capture(status, headers, exc_info=None):
        reply["status"], reply["headers"] = status, headers
        return lambda data: None

    body = b"".join(moto_app(environ, capture))
    body = body.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult")
    headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in reply["headers"]]
    start_response(reply["status"], headers)
    return [body]


server = make_server("127.0.0.1", 0, app, threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
host, port = server.server_address[:2]
print(f"moto ready on {host}:{port}", flush=True)
sys.stdin.read()
server.shutdown()

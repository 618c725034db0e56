"""An S3/Kinesis API server (moto) for one test: listens on a free loopback port, prints
`moto ready on HOST:PORT`, and exits when its standard input closes (the test ended or died)."""
import sys

from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"moto ready on {host}:{port}", flush=True)
sys.stdin.read()
server.stop()

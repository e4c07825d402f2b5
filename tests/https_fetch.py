"""GETs paths from an HTTPS server on loopback, one new TLS connection each
(no certificate check: the test's server is self-signed).
Usage: https_fetch.py PORT PATH...; prints 'PATH STATUS LENGTH SHA256' per path."""
import hashlib
import http.client
import ssl
import sys

port = int(sys.argv[1])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
for path in sys.argv[2:]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    print(path, response.status, len(body), hashlib.sha256(body).hexdigest())
    connection.close()

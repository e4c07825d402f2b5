"""Uses a private key the way a Python program does, then holds it: for
memory scans. Prints 'ready' once the key has been used, then waits for a
line on stdin.
Usage: key_user.py ssl CERT KEY       -- a TLS server context of the ssl
                                         module, and one handshake with it
       key_user.py cryptography KEY   -- python3-cryptography loads the key
                                         and signs with it"""
import socket
import ssl
import sys
import threading


def ssl_server(cert, key):
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cert)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(64))

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            if tls.recv(64) != b"ping":
                sys.exit("no echo")
    thread.join(timeout=10)
    listener.close()
    return server_ctx


def cryptography_sign(path):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    if isinstance(key, rsa.RSAPrivateKey):
        key.sign(b"secmem", padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        key.sign(b"secmem", ec.ECDSA(hashes.SHA256()))
    else:
        key.sign(b"secmem")
    return key


held = ssl_server(sys.argv[2], sys.argv[3]) if sys.argv[1] == "ssl" else cryptography_sign(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()

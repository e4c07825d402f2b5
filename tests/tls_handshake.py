"""One TLS handshake through Python's ssl module, server and client in one
process (the _ssl module loads libssl/libcrypto with RTLD_LOCAL, after
start-up). Usage: tls_handshake.py CERT KEY. Prints 'handshake ok TLSv1.x'.
handshake() is also key_user.py's: it keeps the server context."""
import socket
import ssl
import sys
import threading


def handshake(cert, key):
    """Returns (server context, TLS version, whether ping/pong went through)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cert)

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = []

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            received.append(tls.recv(64))
            tls.sendall(b"pong")

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            reply = tls.recv(64)
            version = tls.version()
    thread.join(timeout=10)
    listener.close()
    return server_ctx, version, reply == b"pong" and received == [b"ping"]


if __name__ == "__main__":
    _, version, ok = handshake(sys.argv[1], sys.argv[2])
    if ok:
        print("handshake ok", version)
    else:
        print("handshake FAILED")
        sys.exit(1)

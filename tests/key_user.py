"""Uses a private key the way a Python program does, then holds it: for
memory scans. Prints 'ready' once the key has been used, then waits for a
line on stdin.
Usage: key_user.py ssl CERT KEY       -- a TLS server context of the ssl
                                         module, and one handshake with it
       key_user.py cryptography KEY   -- python3-cryptography loads the key
                                         and signs with it"""
import sys


def ssl_server(cert, key):
    from tls_handshake import handshake  # beside this file

    server_ctx, _, ok = handshake(cert, key)
    if not ok:
        sys.exit("no TLS exchange")
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

// A library with its own copy of OpenSSL (libcrypto.a linked in), as a
// bundled Python's libpython or a vendored SDK carries one; own_openssl_user
// loads it at start. `secmem run` names the library, not only the executable.
#include <openssl/crypto.h>

int own_openssl_lib_ready(void) { return CRYPTO_secure_malloc_initialized() >= 0; }

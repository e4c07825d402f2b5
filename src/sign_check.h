// Sign a fixed message with a key and verify the signature: the check that a
// key loaded into (secret) memory still works. Used by the demo's signing
// program and by the tests' probe.
#pragma once

#include <openssl/evp.h>

namespace secmem::tool {

inline bool sign_and_verify(EVP_PKEY *key) {
  const unsigned char message[] = "secmem: sign and verify";
  unsigned char signature[512];
  size_t length = sizeof signature;
  // Ed25519 and Ed448 hash the message themselves: no digest is named.
  int id = EVP_PKEY_get_base_id(key);
  const EVP_MD *md = id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool ok = EVP_DigestSignInit(ctx, nullptr, md, nullptr, key) == 1 &&
            EVP_DigestSign(ctx, signature, &length, message, sizeof message) == 1;
  EVP_MD_CTX_free(ctx);
  ctx = EVP_MD_CTX_new();
  ok = ok && EVP_DigestVerifyInit(ctx, nullptr, md, nullptr, key) == 1 &&
       EVP_DigestVerify(ctx, signature, length, message, sizeof message) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

} // namespace secmem::tool

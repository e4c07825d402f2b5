#include "keys.h"

#include <cctype>
#include <cstdio>
#include <memory>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "proc.h"

namespace secmem::tool {

namespace {
struct PkeyFree {
  void operator()(EVP_PKEY *key) const { EVP_PKEY_free(key); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// Tries PEM, then DER, as a private key; then as a public key, to say so.
Pkey load_private(const std::string &path) {
  FILE *file = fopen(path.c_str(), "rb");
  if (file == nullptr) throw ToolError{2, "cannot open key file " + path};
  Pkey key;
  for (const char *format : {"PEM", "DER"}) {
    EVP_PKEY *loaded = nullptr;
    OSSL_DECODER_CTX *ctx =
        OSSL_DECODER_CTX_new_for_pkey(&loaded, format, nullptr, nullptr, EVP_PKEY_KEYPAIR, nullptr, nullptr);
    rewind(file);
    if (ctx != nullptr && OSSL_DECODER_from_fp(ctx, file) == 1) key.reset(loaded);
    OSSL_DECODER_CTX_free(ctx);
    if (key) break;
  }
  if (!key) {
    bool is_public = false;
    for (const char *format : {"PEM", "DER"}) {
      EVP_PKEY *loaded = nullptr;
      OSSL_DECODER_CTX *ctx =
          OSSL_DECODER_CTX_new_for_pkey(&loaded, format, nullptr, nullptr, EVP_PKEY_PUBLIC_KEY, nullptr, nullptr);
      rewind(file);
      if (ctx != nullptr && OSSL_DECODER_from_fp(ctx, file) == 1) is_public = true;
      EVP_PKEY_free(loaded);
      OSSL_DECODER_CTX_free(ctx);
    }
    fclose(file);
    throw ToolError{2, is_public ? path + " holds a public key: scan needs the private key to know what to look for"
                                 : path + " is not a PEM or DER private key"};
  }
  fclose(file);
  return key;
}
} // namespace

std::vector<std::vector<unsigned char>> private_scalar_patterns(const std::string &path) {
  Pkey key = load_private(path);
  std::vector<unsigned char> bytes;
  BIGNUM *bn = nullptr;
  if (EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_RSA_D, &bn) == 1 ||
      EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_PRIV_KEY, &bn) == 1) {
    bytes.resize(static_cast<size_t>(BN_num_bytes(bn)));
    BN_bn2bin(bn, bytes.data());
    BN_clear_free(bn);
  } else {
    size_t len = 0;
    if (EVP_PKEY_get_raw_private_key(key.get(), nullptr, &len) != 1)
      throw ToolError{2, path + ": this key type's private part cannot be extracted"};
    bytes.resize(len);
    EVP_PKEY_get_raw_private_key(key.get(), bytes.data(), &len);
  }
  if (bytes.size() < 16) throw ToolError{2, path + ": private scalar too short to search for reliably"};
  return {bytes, std::vector<unsigned char>(bytes.rbegin(), bytes.rend())};
}

std::vector<unsigned char> parse_hex(const std::string &text) {
  std::string digits;
  for (char c : text) {
    if (c == ' ' || c == ':') continue;
    if (!isxdigit(static_cast<unsigned char>(c)))
      throw ToolError{2, "--hex: '" + std::string(1, c) + "' is not a hex digit"};
    digits += c;
  }
  if (digits.empty() || digits.size() % 2 != 0)
    throw ToolError{2, "--hex needs an even, non-zero number of hex digits"};
  if (digits.size() < 8) throw ToolError{2, "--hex: give at least 4 bytes, or every process matches"};
  std::vector<unsigned char> bytes;
  for (size_t i = 0; i < digits.size(); i += 2)
    bytes.push_back(static_cast<unsigned char>(std::stoi(digits.substr(i, 2), nullptr, 16)));
  return bytes;
}

void write_ec_key(const std::string &path) {
  Pkey key(EVP_EC_gen("P-256"));
  FILE *file = fopen(path.c_str(), "w");
  if (!key || file == nullptr || PEM_write_PrivateKey(file, key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    if (file != nullptr) fclose(file);
    throw ToolError{3, "cannot write a key to " + path};
  }
  fclose(file);
}

} // namespace secmem::tool

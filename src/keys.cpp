#include "keys.h"
#include <algorithm>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <linux/magic.h>
#include <memory>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sstream>
#include <string_view>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

namespace secmem::tool {

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY *key) const { EVP_PKEY_free(key); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

struct BnFree {
  void operator()(BIGNUM *bn) const { BN_clear_free(bn); }
};
using Bn = std::unique_ptr<BIGNUM, BnFree>;

// The whole file (a pipe too); secrets read from it are wiped by the caller.
// Key and passphrase files are small: past 1 MiB it is no such file
// (/dev/zero would never end).
// A pipe or FIFO is read for 10 seconds at most, from its opening to its
// end: opened without waiting for a writer (a named FIFO that no one opened
// hung the command for ever, and so did one whose writer kept it open).
std::string read_whole(const std::string &path, const char *what) {
  constexpr size_t kMaxBytes = 1 << 20;
  constexpr int kPipeWaitMs = 10000;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw ToolError{2, std::string("cannot open ") + what + " " + path + ": " + strerror(errno)};
  struct stat st {};
  bool pipe = fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
  if (!pipe) {
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kPipeWaitMs);
  std::string data;
  char buf[65536];
  ssize_t got = 0;
  int err = 0;
  bool late = false;
  while (data.size() <= kMaxBytes) {
    if (pipe) { // wait for bytes, or the writer's end, until the deadline
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd ready{fd, POLLIN, 0};
      int n = left.count() > 0 ? poll(&ready, 1, static_cast<int>(left.count())) : 0;
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) {
        late = true;
        break;
      }
    }
    got = read(fd, buf, sizeof buf);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) break;
    data.append(buf, static_cast<size_t>(got));
  }
  err = errno;
  close(fd);
  OPENSSL_cleanse(buf, sizeof buf);
  if (late || data.size() > kMaxBytes) OPENSSL_cleanse(data.data(), data.size());
  if (late)
    throw ToolError{2, std::string(what) + " " + path + ": not read to its end within " +
                           std::to_string(kPipeWaitMs / 1000) + " s (a pipe whose writer is still there)"};
  if (data.size() > kMaxBytes)
    throw ToolError{2, std::string(what) + " " + path + " is longer than 1 MiB: not a key or passphrase file"};
  if (got < 0) throw ToolError{2, std::string("cannot read ") + what + " " + path + ": " + strerror(err)};
  return data;
}

void wipe(std::string &text) {
  OPENSSL_cleanse(text.data(), text.size());
  text.clear();
}

// The passphrase file named on the command line, for messages.
std::string g_passphrase_file;

// The passphrase: the file's first line, without its line end.
std::string read_passphrase(const std::string &passphrase_file) {
  std::string data = read_whole(passphrase_file, "passphrase file");
  std::string pass = data.substr(0, data.find('\n'));
  if (!pass.empty() && pass.back() == '\r') pass.pop_back();
  wipe(data);
  return pass;
}

std::vector<unsigned char> bn_bytes(const BIGNUM *bn) {
  std::vector<unsigned char> bytes(static_cast<size_t>(BN_num_bytes(bn)));
  BN_bn2bin(bn, bytes.data());
  return bytes;
}

void add(KeyMaterial &key, std::string name, std::vector<unsigned char> bytes) {
  if (bytes.size() < kMinComponentBytes)
    key.too_short.push_back(std::move(name));
  else
    key.components.push_back({std::move(name), std::move(bytes)});
}

// ---- keys OpenSSL reads --------------------------------------------------------------

// Asked for the passphrase of an encrypted key: gives it when there is one.
struct PassphraseAsk {
  const std::string *pass = nullptr; // null: none was given
  bool asked = false;
};

int give_passphrase(char *buf, int size, int, void *user) {
  auto *ask = static_cast<PassphraseAsk *>(user);
  ask->asked = true;
  if (ask->pass == nullptr || static_cast<int>(ask->pass->size()) > size) return -1;
  memcpy(buf, ask->pass->data(), ask->pass->size());
  return static_cast<int>(ask->pass->size());
}

// ---- the cost of an encrypted PKCS#8 key's derivation --------------------------------
// OpenSSL runs whatever PBKDF2 round count a file asks for (scrypt it bounds by
// memory only): a file asking for billions would hold the scan for hours. The
// cost is read from the file before the passphrase is given, and refused past
// twice what careful tools use today (OWASP: 600,000 PBKDF2-SHA256 rounds;
// scrypt's N = 2^20, r = 8).
constexpr uint64_t kMaxPbkdfRounds = 10'000'000;
constexpr uint64_t kMaxScryptWork = uint64_t{1} << 24; // N * r * p

template <typename T> struct Asn1Free;
#define SECMEM_ASN1_FREE(T)                      \
  template <> struct Asn1Free<T> {               \
    void operator()(T *p) const { T##_free(p); } \
  };
SECMEM_ASN1_FREE(X509_SIG)
SECMEM_ASN1_FREE(PBE2PARAM)
SECMEM_ASN1_FREE(PBKDF2PARAM)
SECMEM_ASN1_FREE(SCRYPT_PARAMS)
SECMEM_ASN1_FREE(PBEPARAM)
#undef SECMEM_ASN1_FREE
template <typename T> using Asn1 = std::unique_ptr<T, Asn1Free<T>>;

// An algorithm's parameters as type T (null: not a sequence of that shape).
template <typename T> Asn1<T> parameters(const X509_ALGOR *alg, const ASN1_ITEM *item) {
  int type = 0;
  const void *value = nullptr;
  X509_ALGOR_get0(nullptr, &type, &value, alg);
  if (type != V_ASN1_SEQUENCE || value == nullptr) return nullptr;
  return Asn1<T>(static_cast<T *>(ASN1_item_unpack(static_cast<const ASN1_STRING *>(value), item)));
}

uint64_t asn1_count(const ASN1_INTEGER *n) {
  uint64_t value = 0;
  return n != nullptr && ASN1_INTEGER_get_uint64(&value, n) == 1 ? value : UINT64_MAX; // negative or huge: too much
}

std::string count_text(uint64_t n) { return n == UINT64_MAX ? "a negative or unreadable number" : std::to_string(n); }

// What the key derivation of sig asks for, when it is more than is decrypted
// here ("" otherwise, and for what OpenSSL will refuse on its own).
std::string derivation_too_costly(const X509_SIG *sig) {
  const X509_ALGOR *alg = nullptr;
  X509_SIG_get0(sig, &alg, nullptr);
  const ASN1_OBJECT *oid = nullptr;
  X509_ALGOR_get0(&oid, nullptr, nullptr, alg);
  uint64_t rounds = 0;
  if (OBJ_obj2nid(oid) == NID_pbes2) {
    Asn1<PBE2PARAM> pbes2 = parameters<PBE2PARAM>(alg, ASN1_ITEM_rptr(PBE2PARAM));
    if (!pbes2) return "";
    X509_ALGOR_get0(&oid, nullptr, nullptr, pbes2->keyfunc);
    if (OBJ_obj2nid(oid) == NID_id_scrypt) {
      Asn1<SCRYPT_PARAMS> scrypt = parameters<SCRYPT_PARAMS>(pbes2->keyfunc, ASN1_ITEM_rptr(SCRYPT_PARAMS));
      if (!scrypt) return "";
      uint64_t n = asn1_count(scrypt->costParameter), r = asn1_count(scrypt->blockSize),
               p = asn1_count(scrypt->parallelizationParameter), work = 0;
      if (!__builtin_mul_overflow(n, r, &work) && !__builtin_mul_overflow(work, p, &work) && work <= kMaxScryptWork)
        return "";
      return "scrypt with N = " + count_text(n) + ", r = " + count_text(r) + ", p = " + count_text(p) +
             " (N * r * p past " + std::to_string(kMaxScryptWork) + ")";
    }
    if (OBJ_obj2nid(oid) != NID_id_pbkdf2) return "";
    Asn1<PBKDF2PARAM> pbkdf2 = parameters<PBKDF2PARAM>(pbes2->keyfunc, ASN1_ITEM_rptr(PBKDF2PARAM));
    if (!pbkdf2) return "";
    rounds = asn1_count(pbkdf2->iter);
  } else {
    Asn1<PBEPARAM> pbes1 = parameters<PBEPARAM>(alg, ASN1_ITEM_rptr(PBEPARAM)); // PKCS#5 v1, PKCS#12
    if (!pbes1) return "";
    rounds = asn1_count(pbes1->iter);
  }
  if (rounds <= kMaxPbkdfRounds) return "";
  return count_text(rounds) + " rounds (past " + std::to_string(kMaxPbkdfRounds) + ")";
}

// Every block of data that holds an encrypted PKCS#8 key, as OpenSSL's
// decoder may try any of them (it skips blocks it cannot read): PEM blocks of
// any name, after their traditional encryption (Proc-Type: 4,ENCRYPTED, one
// round of MD5 with the passphrase) when they have it, and the whole of a DER
// file. What the first too costly derivation asks for, or "".
std::string encrypted_key_too_costly(const std::string &data, const std::string &passphrase) {
  auto costly = [](const unsigned char *der, long len) {
    const unsigned char *at = der;
    Asn1<X509_SIG> sig(d2i_X509_SIG(nullptr, &at, len));
    return sig ? derivation_too_costly(sig.get()) : std::string();
  };
  std::string found;
  for (size_t begin = data.find("-----BEGIN "); begin != std::string::npos && found.empty();
       begin = data.find("-----BEGIN ", begin + 1)) {
    size_t end = data.find("-----END ", begin);
    if (end == std::string::npos) break;
    end = data.find('\n', end);
    std::string block = data.substr(begin, end == std::string::npos ? std::string::npos : end - begin + 1);
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(block.data(), static_cast<int>(block.size())),
                                                  BIO_free);
    char *name = nullptr, *header = nullptr;
    unsigned char *der = nullptr;
    long len = 0;
    if (PEM_read_bio(bio.get(), &name, &header, &der, &len) == 1) {
      EVP_CIPHER_INFO cipher{};
      bool plain = PEM_get_EVP_CIPHER_INFO(header, &cipher) == 1 && cipher.cipher == nullptr;
      PassphraseAsk ask{&passphrase, false};
      if (plain || PEM_do_header(&cipher, der, &len, give_passphrase, &ask) == 1) found = costly(der, len);
      OPENSSL_clear_free(der, static_cast<size_t>(len)); // a plain key's bytes
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_cleanse(block.data(), block.size());
  }
  if (found.empty() && data.find("-----BEGIN") == std::string::npos)
    found = costly(reinterpret_cast<const unsigned char *>(data.data()), static_cast<long>(data.size()));
  ERR_clear_error();
  return found;
}

// PEM: the first private key in the file, wherever it is; then DER.
Pkey read_openssl_key(const std::string &data, PassphraseAsk *ask, std::string *format) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())), BIO_free);
  Pkey key(PEM_read_bio_PrivateKey_ex(bio.get(), nullptr, give_passphrase, ask, nullptr, nullptr));
  *format = "PEM";
  if (key || data.find("-----BEGIN") != std::string::npos) return key;
  EVP_PKEY *loaded = nullptr;
  OSSL_DECODER_CTX *ctx =
      OSSL_DECODER_CTX_new_for_pkey(&loaded, "DER", nullptr, nullptr, EVP_PKEY_KEYPAIR, nullptr, nullptr);
  const auto *bytes = reinterpret_cast<const unsigned char *>(data.data());
  size_t left = data.size();
  if (ctx != nullptr && OSSL_DECODER_CTX_set_pem_password_cb(ctx, give_passphrase, ask) == 1 &&
      OSSL_DECODER_from_data(ctx, &bytes, &left) == 1)
    key.reset(loaded);
  OSSL_DECODER_CTX_free(ctx);
  *format = "DER";
  return key;
}

// An OpenSSH public key: a line of a .pub file, authorized_keys (options
// first) or known_hosts (host names first): a key type, then the base64 of a
// blob that names the same type (its length, then the type); or an RFC 4716
// one ("---- BEGIN SSH2 PUBLIC KEY ----"). Only the first line is read.
bool holds_openssh_public_key(const std::string &data) {
  if (data.rfind("---- BEGIN SSH2 PUBLIC KEY ----", 0) == 0) return true;
  std::istringstream line(data.substr(0, data.find('\n')));
  std::vector<std::string> words;
  for (std::string word; line >> word && words.size() < 64;) words.push_back(word);
  for (size_t i = 0; i + 1 < words.size(); ++i) {
    const std::string &type = words[i], &blob = words[i + 1];
    if (type.size() < 4 || type.size() > 64 || blob.size() < 8) continue;
    size_t prefix = std::min(blob.size(), size_t{96}) / 4 * 4; // up to 72 bytes: the length and the type
    unsigned char head[96] = {};
    int n = EVP_DecodeBlock(head, reinterpret_cast<const unsigned char *>(blob.data()), static_cast<int>(prefix));
    if (n < 4) continue;
    uint32_t length = uint32_t{head[0]} << 24 | uint32_t{head[1]} << 16 | uint32_t{head[2]} << 8 | head[3];
    if (length == type.size() && static_cast<size_t>(n) >= 4 + length && memcmp(head + 4, type.data(), length) == 0)
      return true;
  }
  return false;
}

bool holds_public_key(const std::string &data) {
  if (holds_openssh_public_key(data)) return true;
  for (const char *format : {"PEM", "DER"}) {
    EVP_PKEY *loaded = nullptr;
    OSSL_DECODER_CTX *ctx =
        OSSL_DECODER_CTX_new_for_pkey(&loaded, format, nullptr, nullptr, EVP_PKEY_PUBLIC_KEY, nullptr, nullptr);
    const auto *bytes = reinterpret_cast<const unsigned char *>(data.data());
    size_t left = data.size();
    bool ok = ctx != nullptr && OSSL_DECODER_from_data(ctx, &bytes, &left) == 1;
    EVP_PKEY_free(loaded);
    OSSL_DECODER_CTX_free(ctx);
    if (ok) return true;
  }
  return false;
}

void add_bn_param(KeyMaterial &key, EVP_PKEY *pkey, const char *param, const std::string &name) {
  BIGNUM *raw = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, param, &raw) != 1) return;
  Bn bn(raw);
  add(key, name, bn_bytes(bn.get()));
}

void components_of(EVP_PKEY *pkey, KeyMaterial &key) {
  const char *type = EVP_PKEY_get0_type_name(pkey);
  key.type = type == nullptr ? "unknown" : type;
  if (key.type == "ED25519" || key.type == "ED448") key.type = key.type == "ED25519" ? "Ed25519" : "Ed448";
  if (EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_is_a(pkey, "RSA-PSS")) {
    key.type = "RSA";
    add_bn_param(key, pkey, OSSL_PKEY_PARAM_RSA_D, "RSA d");
    // Multi-prime keys have up to 10 primes, 10 exponents, 9 coefficients.
    for (int i = 1; i <= 10; ++i)
      add_bn_param(key, pkey, ("rsa-factor" + std::to_string(i)).c_str(),
                   i == 1   ? "RSA p"
                   : i == 2 ? "RSA q"
                            : "RSA prime " + std::to_string(i));
    for (int i = 1; i <= 10; ++i)
      add_bn_param(key, pkey, ("rsa-exponent" + std::to_string(i)).c_str(),
                   i == 1   ? "RSA dP"
                   : i == 2 ? "RSA dQ"
                            : "RSA exponent " + std::to_string(i));
    for (int i = 1; i <= 9; ++i)
      add_bn_param(key, pkey, ("rsa-coefficient" + std::to_string(i)).c_str(),
                   i == 1 ? "RSA qInv" : "RSA coefficient " + std::to_string(i + 1));
  } else if (EVP_PKEY_is_a(pkey, "EC") || EVP_PKEY_is_a(pkey, "SM2")) {
    add_bn_param(key, pkey, OSSL_PKEY_PARAM_PRIV_KEY, "EC private scalar");
  } else if (EVP_PKEY_is_a(pkey, "DH") || EVP_PKEY_is_a(pkey, "DHX")) {
    add_bn_param(key, pkey, OSSL_PKEY_PARAM_PRIV_KEY, "DH private value");
  } else if (EVP_PKEY_is_a(pkey, "DSA")) {
    add_bn_param(key, pkey, OSSL_PKEY_PARAM_PRIV_KEY, "DSA private value");
  } else {
    size_t len = 0;
    if (EVP_PKEY_get_raw_private_key(pkey, nullptr, &len) == 1) {
      std::vector<unsigned char> bytes(len);
      if (EVP_PKEY_get_raw_private_key(pkey, bytes.data(), &len) == 1) {
        bytes.resize(len);
        add(key, key.type + " private key", std::move(bytes));
      }
    }
  }
}

// ---- OpenSSH-format keys (PROTOCOL.key: "openssh-key-v1") -----------------------------

const char kOpensshBegin[] = "-----BEGIN OPENSSH PRIVATE KEY-----";
const char kOpensshEnd[] = "-----END OPENSSH PRIVATE KEY-----";

// Big-endian length-prefixed fields; any overrun is a malformed file.
struct SshReader {
  const unsigned char *at;
  size_t left;
  const std::string *path;

  [[noreturn]] void bad() const { throw ToolError{2, *path + " is not a well-formed OpenSSH private key"}; }
  uint32_t u32() {
    if (left < 4) bad();
    uint32_t value = (uint32_t{at[0]} << 24) | (uint32_t{at[1]} << 16) | (uint32_t{at[2]} << 8) | at[3];
    at += 4;
    left -= 4;
    return value;
  }
  std::string_view string() {
    uint32_t len = u32();
    if (len > left) bad();
    std::string_view value(reinterpret_cast<const char *>(at), len);
    at += len;
    left -= len;
    return value;
  }
  // An mpint as an unsigned value: its leading zero bytes dropped.
  std::vector<unsigned char> mpint() {
    std::string_view value = string();
    size_t skip = 0;
    while (skip < value.size() && value[skip] == 0) ++skip;
    return {value.begin() + static_cast<long>(skip), value.end()};
  }
};

std::string base64_decode(std::string_view text, const std::string &path) {
  std::string compact;
  for (char c : text)
    if (!isspace(static_cast<unsigned char>(c))) compact += c;
  std::string out(compact.size() / 4 * 3 + 3, '\0');
  EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
  int len = 0, tail = 0;
  EVP_DecodeInit(ctx);
  bool ok = EVP_DecodeUpdate(ctx, reinterpret_cast<unsigned char *>(out.data()), &len,
                             reinterpret_cast<const unsigned char *>(compact.data()),
                             static_cast<int>(compact.size())) >= 0 &&
            EVP_DecodeFinal(ctx, reinterpret_cast<unsigned char *>(out.data()) + len, &tail) == 1;
  EVP_ENCODE_CTX_free(ctx);
  wipe(compact);
  if (!ok) {
    wipe(out);
    throw ToolError{2, path + ": its OpenSSH key block is not valid base64"};
  }
  out.resize(static_cast<size_t>(len + tail));
  return out;
}

// The blob of an OpenSSH-format key between its armour lines.
std::string openssh_blob(const std::string &data, const std::string &path) {
  size_t begin = data.find(kOpensshBegin), end = data.find(kOpensshEnd);
  if (begin == std::string::npos || end == std::string::npos || end < begin)
    throw ToolError{2, path + " is not a well-formed OpenSSH private key"};
  begin += sizeof kOpensshBegin - 1;
  return base64_decode(std::string_view(data).substr(begin, end - begin), path);
}

// The cipher an OpenSSH-format key is encrypted with ("none" when it is not).
std::string openssh_cipher(const std::string &blob, const std::string &path) {
  static const char kMagic[] = "openssh-key-v1";
  if (blob.size() < sizeof kMagic || memcmp(blob.data(), kMagic, sizeof kMagic) != 0)
    throw ToolError{2, path + " is not a well-formed OpenSSH private key"};
  SshReader in{reinterpret_cast<const unsigned char *>(blob.data()) + sizeof kMagic, blob.size() - sizeof kMagic,
               &path};
  return std::string(in.string());
}

void openssh_components(const std::string &blob, const std::string &path, KeyMaterial &key) {
  static const char kMagic[] = "openssh-key-v1";
  SshReader in{reinterpret_cast<const unsigned char *>(blob.data()) + sizeof kMagic, blob.size() - sizeof kMagic,
               &path};
  in.string(); // cipher: none here
  in.string(); // kdf
  in.string(); // kdf options
  uint32_t keys = in.u32();
  if (keys != 1) throw ToolError{2, path + ": an OpenSSH file with " + std::to_string(keys) + " keys (one is read)"};
  in.string(); // public key
  std::string_view secret = in.string();
  SshReader priv{reinterpret_cast<const unsigned char *>(secret.data()), secret.size(), &path};
  if (priv.u32() != priv.u32()) in.bad(); // the check numbers of a decrypted section agree
  std::string type(priv.string());
  key.format = "OpenSSH";
  if (type == "ssh-rsa") {
    key.type = "RSA";
    priv.mpint(); // n
    priv.mpint(); // e
    std::vector<unsigned char> d = priv.mpint(), iqmp = priv.mpint(), p = priv.mpint(), q = priv.mpint();
    // OpenSSH keeps no dP and dQ: they are d mod (p-1) and d mod (q-1).
    Bn bd(BN_bin2bn(d.data(), static_cast<int>(d.size()), BN_secure_new()));
    Bn bp(BN_bin2bn(p.data(), static_cast<int>(p.size()), BN_secure_new()));
    Bn bq(BN_bin2bn(q.data(), static_cast<int>(q.size()), BN_secure_new()));
    Bn dp(BN_secure_new()), dq(BN_secure_new()), pm1(BN_secure_new()), qm1(BN_secure_new());
    std::unique_ptr<BN_CTX, decltype(&BN_CTX_free)> ctx(BN_CTX_secure_new(), BN_CTX_free);
    if (!bd || !bp || !bq || !dp || !dq || !pm1 || !qm1 || !ctx || BN_sub(pm1.get(), bp.get(), BN_value_one()) != 1 ||
        BN_sub(qm1.get(), bq.get(), BN_value_one()) != 1 || BN_mod(dp.get(), bd.get(), pm1.get(), ctx.get()) != 1 ||
        BN_mod(dq.get(), bd.get(), qm1.get(), ctx.get()) != 1)
      throw ToolError{2, path + ": its RSA key's numbers are not a valid key (no CRT exponents can be derived)"};
    add(key, "RSA d", d);
    add(key, "RSA p", p);
    add(key, "RSA q", q);
    add(key, "RSA dP", bn_bytes(dp.get()));
    add(key, "RSA dQ", bn_bytes(dq.get()));
    add(key, "RSA qInv", iqmp);
    for (auto *bytes : {&d, &iqmp, &p, &q}) OPENSSL_cleanse(bytes->data(), bytes->size());
  } else if (type == "ssh-ed25519") {
    key.type = "Ed25519";
    priv.string();                               // public key
    std::string_view secret_key = priv.string(); // the 32-byte seed, then the public key
    if (secret_key.size() != 64) in.bad();
    add(key, "Ed25519 private key", {secret_key.begin(), secret_key.begin() + 32});
  } else if (type.rfind("ecdsa-sha2-", 0) == 0) {
    key.type = "EC";
    priv.string(); // curve
    priv.string(); // public point
    add(key, "EC private scalar", priv.mpint());
  } else if (type == "ssh-dss") {
    key.type = "DSA";
    for (int i = 0; i < 4; ++i) priv.mpint(); // p, q, g, y
    add(key, "DSA private value", priv.mpint());
  } else if (type.rfind("sk-", 0) == 0) {
    throw ToolError{2, path + " holds a security-key (FIDO) key: its private part is in the token, not in the file"};
  } else {
    throw ToolError{2, path + ": OpenSSH key type " + type + " is not one scan knows"};
  }
}

// A private directory (mode 0700) on a memory file system (tmpfs), so that a
// decrypted key is never written to a disk: /dev/shm, then XDG_RUNTIME_DIR.
// exec: it must also let the askpass helper run (not mounted noexec).
constexpr size_t kMaxPrivatePath = 4000; // the signal handler's buffers are PATH_MAX long

std::string private_dir(bool exec) {
  const char *runtime = getenv("XDG_RUNTIME_DIR");
  const char *tmpdir = getenv("TMPDIR");
  std::vector<std::string> bases = {"/dev/shm"};
  if (runtime != nullptr && *runtime == '/') bases.emplace_back(runtime);
  if (exec) bases = {tmpdir != nullptr && *tmpdir == '/' ? tmpdir : "/tmp", "/tmp", "/dev/shm"};
  for (const std::string &base : bases) {
    struct statfs type {};
    struct statvfs fs {};
    // Only a directory no other user can rename entries in: owned by root or
    // by this user, and, when others may write to it, sticky (as /tmp is).
    // Else another user could put a directory of their own in place of ours,
    // with their own askpass helper in it, run by ssh-keygen as this user.
    struct stat dir {};
    if (lstat(base.c_str(), &dir) != 0 || !S_ISDIR(dir.st_mode) || (dir.st_uid != 0 && dir.st_uid != geteuid()) ||
        ((dir.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (dir.st_mode & S_ISVTX) == 0))
      continue;
    if (statvfs(base.c_str(), &fs) != 0 || (fs.f_flag & ST_RDONLY) != 0) continue;
    if (exec && (fs.f_flag & ST_NOEXEC) != 0) continue;
    if (!exec && (statfs(base.c_str(), &type) != 0 || (type.f_type != TMPFS_MAGIC && type.f_type != RAMFS_MAGIC)))
      continue;
    std::string pattern = base + "/secmem-scan-XXXXXX";
    if (pattern.size() > kMaxPrivatePath) continue; // its files' paths must fit the handler's buffers
    if (mkdtemp(pattern.data()) != nullptr) return pattern;
  }
  throw ToolError{3, exec ? "no writable directory that allows running a program (TMPDIR, /tmp, /dev/shm) for "
                            "ssh-keygen's askpass helper"
                          : "no memory file system (/dev/shm, XDG_RUNTIME_DIR) to decrypt an OpenSSH key in without "
                            "writing it to a disk"};
}

bool write_private(const std::string &file, const std::string &text, mode_t mode) {
  int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  return close(fd) == 0 && ok;
}

// What a signal arriving while ssh-keygen works must remove: fixed buffers,
// for a handler that may only make async-signal-safe calls.
struct Decryption {
  char files[3][PATH_MAX];
  char dirs[2][PATH_MAX];
  pid_t child;
};
Decryption g_decryption;
volatile sig_atomic_t g_decrypting = 0;

void remove_decryption() {
  if (g_decryption.child > 0) {
    kill(-g_decryption.child, SIGKILL); // its process group: what it started too
    kill(g_decryption.child, SIGKILL);
    waitpid(g_decryption.child, nullptr, 0);
    g_decryption.child = 0;
  }
  for (const char *file : g_decryption.files)
    if (file[0] != '\0') unlink(file);
  for (const char *dir : g_decryption.dirs)
    if (dir[0] != '\0') rmdir(dir);
}

void on_interrupt(int sig) {
  if (g_decrypting) remove_decryption();
  signal(sig, SIG_DFL);
  raise(sig);
}

// An encrypted OpenSSH-format key, decrypted by ssh-keygen: a copy in a
// private directory on tmpfs, rewritten without a passphrase. The passphrase
// (read once, here) waits in that directory for an SSH_ASKPASS helper, and is
// never on a command line (which every user can read in /proc). ssh-keygen
// gets 30 s (a key whose KDF asks for billions of rounds would never end),
// in a process group of its own that is stopped whole then, dies with this
// process (PR_SET_PDEATHSIG), and an interrupt removes everything first. Returns the decrypted file's text.
std::string decrypt_openssh(const std::string &path, const std::string &passphrase) {
  std::string dir = private_dir(false), helper_dir = private_dir(true);
  std::string copy = dir + "/key", pass = dir + "/pass", askpass = helper_dir + "/askpass";
  Decryption &state = g_decryption;
  state = Decryption{};
  snprintf(state.files[0], sizeof state.files[0], "%s", copy.c_str());
  snprintf(state.files[1], sizeof state.files[1], "%s", pass.c_str());
  snprintf(state.files[2], sizeof state.files[2], "%s", askpass.c_str());
  snprintf(state.dirs[0], sizeof state.dirs[0], "%s", dir.c_str());
  snprintf(state.dirs[1], sizeof state.dirs[1], "%s", helper_dir.c_str());
  // Every signal whose default is to end the process, unless it is ignored
  // (a scan under nohup keeps ignoring SIGHUP).
  const int signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGVTALRM, SIGPROF};
  constexpr int kSignals = sizeof signals / sizeof signals[0];
  struct sigaction interrupt {};
  struct sigaction saved[kSignals] = {};
  interrupt.sa_handler = on_interrupt;
  bool taken[kSignals] = {};
  for (int i = 0; i < kSignals; ++i)
    if (sigaction(signals[i], nullptr, &saved[i]) == 0 && saved[i].sa_handler != SIG_IGN)
      taken[i] = sigaction(signals[i], &interrupt, nullptr) == 0;
  g_decrypting = 1;
  auto done = [&] {
    remove_decryption();
    g_decrypting = 0;
    for (int i = 0; i < kSignals; ++i)
      if (taken[i]) sigaction(signals[i], &saved[i], nullptr);
  };
  std::string data = read_whole(path, "key file");
  std::string quoted;
  for (char c : pass) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  bool written = write_private(copy, data, 0600) && write_private(pass, passphrase, 0600) &&
                 write_private(askpass, "#!/bin/sh\ncat '" + quoted + "'\n", 0700);
  wipe(data);
  if (!written) {
    done();
    throw ToolError{3, "cannot write to the private directory " + dir};
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    done();
    throw ToolError{3, "fork failed"};
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    setpgid(0, 0); // a group of its own, stopped whole (a program it starts too)
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
    }
    setenv("SSH_ASKPASS", askpass.c_str(), 1);
    setenv("SSH_ASKPASS_REQUIRE", "force", 1); // the helper, with or without a terminal
    execlp("ssh-keygen", "ssh-keygen", "-q", "-p", "-N", "", "-f", copy.c_str(), nullptr);
    _exit(127);
  }
  setpgid(pid, pid); // as the child does, whichever runs first
  state.child = pid;
  int status = 0;
  bool finished = false;
  for (int waited = 0; waited < 3000 && !finished; ++waited) { // 30 s
    pid_t got = waitpid(pid, &status, WNOHANG);
    finished = got == pid;
    if (!finished) usleep(10000);
  }
  if (finished) state.child = 0;
  std::string clear;
  bool decrypted = finished && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (decrypted) clear = read_whole(copy, "decrypted key");
  done();
  if (!finished)
    throw ToolError{2, "ssh-keygen did not decrypt " + path +
                           " within 30 s (its key derivation asks for too many "
                           "rounds); it was stopped"};
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
    throw ToolError{3, path + " is an encrypted OpenSSH key: reading it needs ssh-keygen (Debian's openssh-client)"};
  if (!decrypted) throw ToolError{2, "cannot decrypt " + path + " with the passphrase in " + g_passphrase_file};
  return clear;
}

KeyMaterial read_openssh_key(const std::string &path, std::string data, const std::string &passphrase_file) {
  std::string blob = openssh_blob(data, path);
  wipe(data);
  KeyMaterial key;
  if (openssh_cipher(blob, path) != "none") {
    wipe(blob);
    if (passphrase_file.empty())
      throw ToolError{2, path + " is encrypted: give its passphrase with --passphrase-file FILE"};
    std::string passphrase = read_passphrase(passphrase_file); // read once: it may be a pipe
    g_passphrase_file = passphrase_file;
    std::string clear;
    try {
      clear = decrypt_openssh(path, passphrase);
    } catch (...) {
      wipe(passphrase);
      throw;
    }
    wipe(passphrase);
    blob = openssh_blob(clear, path);
    wipe(clear);
  }
  try {
    openssh_components(blob, path, key);
  } catch (...) {
    wipe(blob);
    throw;
  }
  wipe(blob);
  if (key.components.empty())
    throw ToolError{2, path + ": no private component of this " + key.type + " key is long enough to look for"};
  return key;
}

} // namespace

KeyMaterial load_key_material(const std::string &path, const std::string &passphrase_file) {
  return parse_key_material(read_whole(path, "key file"), path, passphrase_file);
}

KeyMaterial parse_key_material(std::string data, const std::string &path, const std::string &passphrase_file) {
  if (data.find(kOpensshBegin) != std::string::npos) return read_openssh_key(path, std::move(data), passphrase_file);
  std::string pass;
  PassphraseAsk ask;
  if (!passphrase_file.empty()) {
    pass = read_passphrase(passphrase_file);
    ask.pass = &pass;
    if (std::string cost = encrypted_key_too_costly(data, pass); !cost.empty()) {
      wipe(data);
      wipe(pass);
      throw ToolError{2, path + " is encrypted with a key derivation of " + cost +
                             ", more than secmem decrypts: decrypt it first (openssl pkcs8)"};
    }
  }
  KeyMaterial key;
  Pkey pkey = read_openssl_key(data, &ask, &key.format);
  wipe(pass);
  ERR_clear_error();
  if (!pkey) {
    // A file with a private key block anywhere is not called a public key
    // (a .pub line before a key block that could not be read was).
    bool is_public = !ask.asked && data.find("PRIVATE KEY-----") == std::string::npos && holds_public_key(data);
    wipe(data);
    if (ask.asked && passphrase_file.empty())
      throw ToolError{2, path + " is encrypted: give its passphrase with --passphrase-file FILE"};
    if (ask.asked) throw ToolError{2, "cannot decrypt " + path + " with the passphrase in " + passphrase_file};
    throw ToolError{2, is_public ? path + " holds a public key: scan needs the private key to know what to look for"
                                 : path + " is not a PEM, DER or OpenSSH private key"};
  }
  wipe(data);
  components_of(pkey.get(), key);
  if (key.components.empty())
    throw ToolError{2, path + ": no private component of this " + key.type + " key is long enough to look for"};
  return key;
}

std::vector<Pattern> key_patterns(const KeyMaterial &key) {
  std::vector<Pattern> patterns;
  for (const KeyComponent &component : key.components) {
    patterns.push_back({component.name, component.bytes});
    std::vector<unsigned char> reversed(component.bytes.rbegin(), component.bytes.rend());
    if (reversed != component.bytes) patterns.push_back({component.name, std::move(reversed)});
  }
  return patterns;
}

std::string describe_key(const KeyMaterial &key) {
  std::string names;
  std::string prefix = key.type + " ";
  for (const KeyComponent &component : key.components) {
    std::string name = component.name.rfind(prefix, 0) == 0 ? component.name.substr(prefix.size()) : component.name;
    names += (names.empty() ? "" : ", ") + name;
  }
  return key.type + " key (" + key.format + "): " + names;
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
  if (fclose(file) != 0) throw ToolError{3, "cannot write a key to " + path + ": " + strerror(errno)};
}

} // namespace secmem::tool

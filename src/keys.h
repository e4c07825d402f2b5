// Private key material for `secmem scan --key-file` and the demo: every
// private component of a key, so that a scan can say which of them a process
// left readable.
#pragma once

#include <string>
#include <vector>

#include "proc.h"

namespace secmem::tool {

// One private component: its name ("RSA p") and its value, big-endian, without
// leading zero bytes (an integer) or as stored (a raw key).
struct KeyComponent {
  std::string name;
  std::vector<unsigned char> bytes;
};

struct KeyMaterial {
  std::string type;                     // "RSA", "EC", "ED25519", ...
  std::string format;                   // "PEM", "DER", "OpenSSH"
  std::vector<KeyComponent> components; // each at least kMinComponentBytes long
  std::vector<std::string> too_short;   // components left out: too short to find reliably
};

// Shorter values match by chance in a process's memory.
inline constexpr size_t kMinComponentBytes = 16;

// Every private component of the key in path:
//  - RSA d, p, q, dP, dQ, qInv (and the further primes of a multi-prime key);
//  - the EC private scalar; DH and DSA private values;
//  - Ed25519, Ed448, X25519 and X448 private keys.
// Reads PEM (the first private key in the file: certificates and parameters
// before it are skipped), DER, PKCS#8 and traditional PEM encryption (with the
// passphrase in passphrase_file, its first line), and OpenSSH-format keys
// (an encrypted one is decrypted by ssh-keygen in a private directory).
// Throws ToolError (exit status 2) for a missing file, a public key, an
// encrypted key without its passphrase or with a wrong one, or garbage.
KeyMaterial load_key_material(const std::string &path, const std::string &passphrase_file = "");

// The same for a file's contents, read already (path names it in errors);
// data is wiped. The key-file fuzzer's entry point.
KeyMaterial parse_key_material(std::string data, const std::string &path, const std::string &passphrase_file = "");

// What a scan looks for: each component in both byte orders (big-endian, as
// in DER and OpenSSH files; little-endian, as in OpenSSL's BIGNUMs on x86).
std::vector<Pattern> key_patterns(const KeyMaterial &key);

// "RSA key (PEM): d, p, q, dP, dQ, qInv"
std::string describe_key(const KeyMaterial &key);

// Bytes from hex text ("00a1ff", spaces and colons allowed). Throws ToolError.
std::vector<unsigned char> parse_hex(const std::string &text);

// Writes a fresh EC P-256 private key as PEM; throws ToolError.
void write_ec_key(const std::string &path);

} // namespace secmem::tool

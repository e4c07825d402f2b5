// Private key material for `secmem scan --key-file` and the demo.
#pragma once

#include <string>
#include <vector>

namespace secmem::tool {

// The private scalar of a PEM or DER private key file (RSA d, EC private
// key, raw X25519/Ed25519/X448/Ed448 key), big-endian, and the same bytes
// reversed. Throws ToolError for a missing file, a public key, or garbage.
std::vector<std::vector<unsigned char>> private_scalar_patterns(const std::string &path);

// Bytes from hex text ("00a1ff", spaces and colons allowed). Throws ToolError.
std::vector<unsigned char> parse_hex(const std::string &text);

// Writes a fresh EC P-256 private key as PEM; throws ToolError.
void write_ec_key(const std::string &path);

} // namespace secmem::tool

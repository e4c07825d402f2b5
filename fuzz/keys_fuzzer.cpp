// libFuzzer target: the key-file reader of `secmem scan --key-file` (PEM,
// DER, PKCS#8, OpenSSH, bundles) on arbitrary bytes. A key it reads must
// give patterns and a description; anything else it must refuse with a
// ToolError. A crash, a sanitizer report, another exception, or a component
// shorter than the reader promises is a finding. No passphrase is given, so
// no decryption runs (nor ssh-keygen). Seeds: a key of each kind, made at
// configure time (make_key_seeds).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "keys.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using namespace secmem::tool;
  try {
    KeyMaterial key = parse_key_material(std::string(reinterpret_cast<const char *>(data), size), "input");
    if (key.components.empty() || key.type.empty() || key.format.empty()) {
      fprintf(stderr, "keys_fuzzer: a key read without its type, format or components\n");
      abort();
    }
    for (const KeyComponent &component : key.components)
      if (component.bytes.size() < kMinComponentBytes || component.name.empty()) {
        fprintf(stderr, "keys_fuzzer: component '%s' of %zu bytes\n", component.name.c_str(), component.bytes.size());
        abort();
      }
    size_t patterns = key_patterns(key).size(); // both byte orders, one for a palindrome
    if (patterns < key.components.size() || patterns > 2 * key.components.size() || describe_key(key).empty()) {
      fprintf(stderr, "keys_fuzzer: patterns or description missing for %s\n", key.type.c_str());
      abort();
    }
  } catch (const ToolError &) {
    // refused, with a message: the expected outcome for most inputs
  }
  return 0;
}

// A 256-bit key held in a secure_vector<std::byte>: generated in place with
// getrandom(2), used, and zeroed by the heap when the vector goes away.
#include <cstdio>
#include <sys/random.h>

#include "secmem/secure_alloc.hpp"

int main() {
  secmem::secure_vector<std::byte> key(32);
  if (getrandom(key.data(), key.size(), 0) != static_cast<ssize_t>(key.size())) {
    perror("key_in_vector: getrandom");
    return 1;
  }
  // "Use" the key without copying it anywhere: a one-byte XOR checksum.
  std::byte check{0};
  for (std::byte b : key) check ^= b;
  printf("key: %zu bytes in secret memory: %s (backend %s); checksum computed in place: %s\n", key.size(),
         secmem_owns(key.data()) ? "yes" : "no", secmem_backend_name(), check == std::byte{0} ? "zero" : "non-zero");
  return 0;
}

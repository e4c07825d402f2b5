#include <array>
#include <cstdio>
#include <secmem/secure_alloc.hpp>
#include <sys/random.h>

int main() {
  secmem::secure_vector<std::byte> key(32); // 32 zero bytes in secret memory
  if (getrandom(key.data(), key.size(), 0) != 32) return 1;
  secmem::secure_string password("correct horse"); // even short text is never inline
  password += " battery staple";
  auto session = secmem::make_secure<std::array<unsigned char, 64>>();
  std::printf("%d %d %d\n", secmem_owns(key.data()), secmem_owns(password.data()), secmem_owns(session.get()));
} // every buffer is zeroed as it is freed

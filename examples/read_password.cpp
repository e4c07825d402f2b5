// Reads a password from the terminal, without echo, straight into secret
// memory: secmem::read_line reads one byte at a time into a secure_string,
// never through a std::string or a stdio buffer, and nothing past the newline.
#include <cstdio>
#include <termios.h>
#include <unistd.h>

#include "secmem/secure_alloc.hpp"

namespace {

// Turns terminal echo off for its lifetime (when stdin is a terminal).
class NoEcho {
public:
  NoEcho() {
    if (tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios quiet = saved_;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    active_ = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
  }
  ~NoEcho() {
    if (active_) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
  }
  NoEcho(const NoEcho &) = delete;
  NoEcho &operator=(const NoEcho &) = delete;

private:
  termios saved_{};
  bool active_ = false;
};

} // namespace

int main() {
  fputs("password: ", stderr);
  secmem::secure_string password;
  ssize_t got;
  {
    NoEcho quiet;
    got = secmem::read_line(STDIN_FILENO, password);
  }
  fputs("\n", stderr);
  if (password.ends_with('\r')) password.pop_back(); // CR LF from a terminal without ICRNL
  if (got <= 0) {
    fputs("read_password: no input\n", stderr);
    return 1;
  }
  printf("read %zu characters; held in secret memory: %s (backend %s)\n", password.size(),
         secmem_owns(password.data()) ? "yes" : "no", secmem_backend_name());
  return 0; // password's destructor hands its buffer back, and the heap zeroes it
}

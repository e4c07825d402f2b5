// Reads a password from the terminal, without echo, straight into secret
// memory: one character at a time into a secure_string, never through a
// std::string or a stdio buffer.
#include <cerrno>
#include <cstdio>
#include <cstring>
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

// Reads one line from fd into out; false on read error or end of input before any character.
bool read_line(int fd, secmem::secure_string &out) {
  char c = 0;
  bool any = false;
  while (true) {
    ssize_t n = read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    any = true;
    if (c == '\n' || c == '\r') break;
    out.push_back(c);
  }
  c = 0;
  return any;
}

} // namespace

int main() {
  fputs("password: ", stderr);
  secmem::secure_string password;
  bool ok;
  {
    NoEcho quiet;
    ok = read_line(STDIN_FILENO, password);
  }
  fputs("\n", stderr);
  if (!ok) {
    fputs("read_password: no input\n", stderr);
    return 1;
  }
  printf("read %zu characters; held in secret memory: %s (backend %s)\n", password.size(),
         secmem_owns(password.data()) ? "yes" : "no", secmem_backend_name());
  return 0; // password's destructor hands its buffer back, and the heap zeroes it
}

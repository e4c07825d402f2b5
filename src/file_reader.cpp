#include "file_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace secmem::tool {

FileReader::FileReader(const std::string &path) {
  int where = open(path.c_str(), O_PATH | O_CLOEXEC);
  if (where < 0) {
    error_ = errno;
    return;
  }
  struct stat looked {
  }, opened{};
  if (fstat(where, &looked) != 0) {
    error_ = errno;
  } else if (!S_ISREG(looked.st_mode)) {
    error_ = S_ISDIR(looked.st_mode) ? EISDIR : 0;
  } else if (looked.st_size <= 0) {
    empty_ = true;
  } else {
    char through[48];
    snprintf(through, sizeof through, "/proc/self/fd/%d", where);
    fd_ = open(through, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd_ < 0) {
      error_ = errno;
    } else if (fstat(fd_, &opened) == 0 && S_ISREG(opened.st_mode) && opened.st_size > 0 &&
               opened.st_dev == looked.st_dev && opened.st_ino == looked.st_ino) {
      size_ = static_cast<uint64_t>(opened.st_size);
    } else {
      close(fd_);
      fd_ = -1;
    }
  }
  close(where);
}

FileReader::~FileReader() {
  if (fd_ >= 0) close(fd_);
}

bool FileReader::read(uint64_t offset, void *out, size_t n) const {
  if (fd_ < 0 || offset > size_ || n > size_ - offset) return false;
  return pread(fd_, out, n, static_cast<off_t>(offset)) == static_cast<ssize_t>(n);
}

std::string FileReader::read_some(uint64_t offset, size_t n) const {
  if (fd_ < 0 || offset >= size_) return "";
  std::string text(static_cast<size_t>(std::min<uint64_t>(n, size_ - offset)), '\0');
  ssize_t got = pread(fd_, text.data(), text.size(), static_cast<off_t>(offset));
  text.resize(got > 0 ? static_cast<size_t>(got) : 0);
  return text;
}

} // namespace secmem::tool

// A file the tool reads without waiting, without end and without opening
// anything but a regular file (elf_deps.cpp, proc.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace secmem::tool {

// A regular file with something in it, read with pread at offsets inside
// its size. The path is first opened O_PATH, which opens nothing (no
// device's open, no FIFO's wait), and only a regular file is then opened for
// reading, through /proc/self/fd: the same file, whatever the path names by
// then (a stat of the path and an open of it let a symlink swapped between
// the two open a FIFO or /dev/watchdog, found by review: the tool runs as
// root under `secmem systemd`). Opened O_NONBLOCK, and kept only with a size:
// kernel files that call themselves regular, /proc/kmsg or tracefs's
// trace_pipe, have size 0 and block when read. Without /proc, nothing is
// read.
class FileReader {
public:
  explicit FileReader(const std::string &path);
  ~FileReader();
  FileReader(const FileReader &) = delete;
  FileReader &operator=(const FileReader &) = delete;

  bool ok() const { return fd_ >= 0; }
  uint64_t size() const { return size_; }
  // Not opened: a regular file with nothing in it (read as empty, never
  // read: a kernel file may block)...
  bool empty() const { return empty_; }
  // ... or why not: an open's errno, EISDIR for a directory, 0 for a file
  // that is not regular (a FIFO, a device, a socket).
  int error() const { return error_; }
  // n bytes at offset, all of them inside the file, or false.
  bool read(uint64_t offset, void *out, size_t n) const;
  // Up to n bytes from offset (fewer at the end of the file).
  std::string read_some(uint64_t offset, size_t n) const;

private:
  int fd_ = -1;
  uint64_t size_ = 0;
  bool empty_ = false;
  int error_ = 0;
};

} // namespace secmem::tool

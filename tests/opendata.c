// A library whose constructor opens a data file of its own (OPENDATA_FILE,
// read-write, a header written at its start) and keeps it open: in a
// program started with stderr closed, the file takes fd 2 before
// libsecmem's constructor runs (the preload tests).
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void open_data(void) {
  const char *path = getenv("OPENDATA_FILE");
  if (path == NULL) return;
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0 && write(fd, "DATABASE-HEADER\n", 16) != 16) close(fd);
}

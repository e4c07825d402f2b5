/* secmem demo: one 32-byte key held twice, in ordinary heap memory and in
 * secmem, and what the kernel lets anyone see of each. Uses only the C API. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <secmem/secmem.h>

#define KEY_BYTES 32

/* The /proc/self/smaps entry holding p: its path and whether VmFlags has flag. */
static void describe_mapping(const void *p, char *path, size_t path_len, int *locked, int *no_dump) {
  FILE *smaps = fopen("/proc/self/smaps", "r");
  char line[512];
  int inside = 0;
  snprintf(path, path_len, "?");
  *locked = *no_dump = 0;
  while (smaps != NULL && fgets(line, sizeof line, smaps) != NULL) {
    unsigned long start, end;
    int consumed = 0;
    if (sscanf(line, "%lx-%lx %*s %*s %*s %*s%n", &start, &end, &consumed) == 2 && consumed > 0) {
      inside = (uintptr_t)p >= start && (uintptr_t)p < end;
      if (inside) {
        const char *name = line + consumed;
        while (*name == ' ') ++name;
        snprintf(path, path_len, "%s", *name == '\n' || *name == '\0' ? "anonymous" : name);
        path[strcspn(path, "\n")] = '\0';
      }
    } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
      *locked = strstr(line, " lo") != NULL;
      *no_dump = strstr(line, " dd") != NULL;
    }
  }
  if (smaps != NULL) fclose(smaps);
}

/* What reading p through /proc/self/mem (as a debugger or an attacker with
 * ptrace rights would) gives back. */
static const char *read_through_proc(const unsigned char *p, const unsigned char *key) {
  static char result[64];
  unsigned char copy[KEY_BYTES];
  int fd = open("/proc/self/mem", O_RDONLY);
  ssize_t n = fd < 0 ? -1 : pread(fd, copy, sizeof copy, (off_t)(uintptr_t)p);
  int err = errno;
  if (fd >= 0) close(fd);
  if (n == (ssize_t)sizeof copy)
    snprintf(result, sizeof result, "%s", memcmp(copy, key, sizeof copy) == 0 ? "the key, in full" : "other bytes");
  else
    snprintf(result, sizeof result, "refused (%s)", err == EIO ? "EIO" : strerror(err));
  return result;
}

int main(void) {
  unsigned char key[KEY_BYTES];
  int random = open("/dev/urandom", O_RDONLY);
  if (random < 0 || read(random, key, sizeof key) != (ssize_t)sizeof key) {
    perror("secret_key_demo: /dev/urandom");
    return 1;
  }
  close(random);

  unsigned char *plain = malloc(KEY_BYTES);
  unsigned char *secret = secmem_malloc(KEY_BYTES);
  if (plain == NULL || secret == NULL) {
    fprintf(stderr, "secret_key_demo: allocation failed: %s\n", strerror(errno));
    return 1;
  }
  memcpy(plain, key, sizeof key);
  memcpy(secret, key, sizeof key);

  char plain_path[128], secret_path[128];
  int plain_locked, plain_no_dump, secret_locked, secret_no_dump;
  describe_mapping(plain, plain_path, sizeof plain_path, &plain_locked, &plain_no_dump);
  describe_mapping(secret, secret_path, sizeof secret_path, &secret_locked, &secret_no_dump);
  char plain_read[64], secret_read[64];
  snprintf(plain_read, sizeof plain_read, "%s", read_through_proc(plain, key));
  snprintf(secret_read, sizeof secret_read, "%s", read_through_proc(secret, key));

  printf("secmem demo: one 32-byte key, held in ordinary heap memory and in secmem\n\n");
  printf("  %-30s %-24s %s\n", "", "malloc()", "secmem_malloc()");
  printf("  %-30s %-24s %s\n", "mapping", plain_path, secret_path);
  printf("  %-30s %-24s %s\n", "locked (never swapped)", plain_locked ? "yes" : "no", secret_locked ? "yes" : "no");
  printf("  %-30s %-24s %s\n", "left out of core dumps", plain_no_dump ? "yes" : "no", secret_no_dump ? "yes" : "no");
  printf("  %-30s %-24s %s\n", "read via /proc/self/mem", plain_read, secret_read);

  size_t usable = secmem_usable_size(secret);
  secmem_free(secret);
  int zeroed = 1;
  for (size_t i = 0; i < usable; ++i) zeroed &= secret[i] == 0; /* the chunk stays mapped: safe to look */
  printf("  %-30s %-24s %s\n", "after free", "left to the allocator", zeroed ? "every byte zeroed" : "NOT ZEROED");
  explicit_bzero(plain, KEY_BYTES);
  free(plain);
  explicit_bzero(key, sizeof key);

  struct secmem_stats stats;
  secmem_get_stats(&stats);
  printf("\nsecmem backend: %s; %zu KiB mapped, %zu KiB charged to RLIMIT_MEMLOCK, %zu pages touched\n", stats.backend,
         (stats.mapped_secret + stats.mapped_locked + stats.mapped_unlocked) / 1024, stats.memlock_charged / 1024,
         stats.pages_touched);
  if (strcmp(stats.backend, "memfd_secret") != 0)
    printf("The key sat in secmem's fallback tier (%s): kept out of swap and core dumps, but readable by\n"
           "anyone allowed to ptrace this process. memfd_secret was not used (forced by SECMEM_BACKEND,\n"
           "or refused: see the line secmem printed on stderr).\n",
           stats.backend);
  return 0;
}

/* dlclose of a plugin that pulled in libsecmem: libsecmem.so stays loaded
 * (loaded by dlopen, it pins itself: RTLD_NODELETE), so threads that used the heap through it exit
 * afterwards without calling unmapped code, and every later load of the
 * plugin uses the same heap: its secret mappings, its locked memory and the
 * process's address space do not grow from load to load (each unload used
 * to leave a 2 MiB chunk and a 64 GiB reservation behind: an unprivileged
 * process's fourth load got unlocked memory, and under ulimit -v every
 * allocation failed after about 55 loads). Exits 0 when all of that holds.
 *   unload PLUGIN_PATH
 *   unload PLUGIN_PATH churn ROUNDS
 *     ROUNDS times, four threads at once each dlopen the plugin, use the heap
 *     through it, dlclose it and exit, while other threads of the round may
 *     be retiring their caches.
 *   unload PLUGIN_PATH static
 *   unload PLUGIN_PATH churn ROUNDS static
 *     The same with a plugin that carries libsecmem.a, which is unloaded with
 *     it: the heap's code is gone from the maps after the dlclose (a thread
 *     cache's key destructor would run in unmapped code: its unload deletes
 *     the key and waits for threads retiring their caches; one waiting for
 *     the heap lock woke up in unmapped code, 8 runs in 10 of the churn).
 *   unload PLUGIN_PATH dlmopen
 *     12 times, the plugin loaded into a namespace of its own (dlmopen), used
 *     and unloaded: each copy of libsecmem goes with its namespace (pinned
 *     there, each kept its namespace's libc and static TLS, and the seventh
 *     dlmopen of any library failed), and a 13th load still works.
 *   unload LIBSECMEM_PATH renamed
 *     libsecmem.so itself, copied under another file name (as a vendoring
 *     tool renames the libraries it bundles), loaded, used through dlsym and
 *     unloaded 20 times: it pins itself all the same, one heap throughout
 *     (it went by the file's name, and each cycle left a heap behind). */
#define _GNU_SOURCE /* dlmopen */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int (*use_secret)(void);
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int used, unloaded;

static void *worker(void *arg) {
  (void)arg;
  int ok = use_secret(); /* this thread now has a thread cache and a key value */
  pthread_mutex_lock(&lock);
  used = ok ? 1 : -1;
  pthread_cond_broadcast(&cond);
  while (!unloaded) pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  return NULL; /* thread exit: key destructors run here */
}

/* The worker goes on, after the unload, and exits (its key destructors run then). */
static void release_worker(pthread_t thread) {
  pthread_mutex_lock(&lock);
  unloaded = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  pthread_join(thread, NULL);
}

/* How many of the process's mappings name libsecmem.so, how many secretmem files it maps (inodes: guard
 * pages split a chunk's mapping in several), and its VmLck and VmSize in KiB. */
struct footprint {
  int libsecmem, secretmem;
  long locked_kib, size_kib;
};

static struct footprint footprint(void) {
  struct footprint f = {0, 0, -1, -1};
  FILE *maps = fopen("/proc/self/maps", "r");
  char line[512];
  unsigned long inodes[64];
  while (maps != NULL && fgets(line, sizeof line, maps) != NULL) {
    if (strstr(line, "libsecmem.so") != NULL) f.libsecmem++;
    unsigned long inode = 0;
    if (strstr(line, "/secretmem") == NULL || sscanf(line, "%*s %*s %*s %*s %lu", &inode) != 1) continue;
    int seen = 0;
    for (int i = 0; i < f.secretmem && i < 64; i++) seen |= inodes[i] == inode;
    if (!seen && f.secretmem < 64) inodes[f.secretmem] = inode;
    f.secretmem += !seen;
  }
  if (maps != NULL) fclose(maps);
  FILE *status = fopen("/proc/self/status", "r");
  while (status != NULL && fgets(line, sizeof line, status) != NULL) {
    sscanf(line, "VmLck: %ld", &f.locked_kib);
    sscanf(line, "VmSize: %ld", &f.size_kib);
  }
  if (status != NULL) fclose(status);
  return f;
}

/* The heap after a later load is the heap after the first: nothing grew. */
static int same_heap(const char *what, struct footprint first, struct footprint now) {
  if (now.libsecmem > 0 && now.secretmem <= first.secretmem && now.locked_kib <= first.locked_kib &&
      now.size_kib <= first.size_kib + 256 * 1024) /* glibc keeps joined threads' stacks */
    return 1;
  fprintf(stderr,
          "%s: libsecmem.so mappings %d, secretmem files %d (first %d), VmLck %ld KiB (first %ld), "
          "VmSize %ld KiB (first %ld)\n",
          what, now.libsecmem, now.secretmem, first.secretmem, now.locked_kib, first.locked_kib, now.size_kib,
          first.size_kib);
  return 0;
}

static const char *g_plugin_path;
static int g_static; /* the plugin carries libsecmem.a: it is unloaded, heap and all */

/* Whether a mapping of path is left. */
static int mapped(const char *path) {
  FILE *maps = fopen("/proc/self/maps", "r");
  char line[4608];
  int found = 0;
  while (maps != NULL && fgets(line, sizeof line, maps) != NULL)
    if (strstr(line, path) != NULL) found = 1;
  if (maps != NULL) fclose(maps);
  return found;
}

static void *churner(void *arg) {
  (void)arg;
  void *plugin = dlopen(g_plugin_path, RTLD_NOW | RTLD_LOCAL);
  if (plugin == NULL) return (void *)1;
  int (*churn)(void) = (int (*)(void))dlsym(plugin, "plugin_churn");
  int ok = churn != NULL && churn();
  dlclose(plugin);
  return ok ? NULL : (void *)1; /* thread exit: the cache's retirement may race the unload */
}

static int churn(int rounds) {
  int failed = 0;
  struct footprint first = {0, 0, 0, 0};
  for (int round = 0; round < rounds; round++) {
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, churner, NULL);
    for (int i = 0; i < 4; i++) {
      void *result = NULL;
      pthread_join(threads[i], &result);
      failed += result != NULL;
    }
    if (round == 0) first = footprint();
  }
  int plugin_left = g_static && mapped(g_plugin_path);
  if (g_static && (failed != 0 || plugin_left)) {
    fprintf(stderr, "unload churn: %d threads failed, the plugin %s\n", failed,
            plugin_left ? "still mapped" : "unloaded");
    return 1;
  }
  if (g_static) {
    printf("unload churn: %d rounds of 4 threads that loaded, used and unloaded a plugin carrying libsecmem.a, "
           "then exited\n",
           rounds);
    return 0;
  }
  if (failed != 0 || !same_heap("unload churn", first, footprint())) {
    fprintf(stderr, "unload churn: %d threads failed\n", failed);
    return 1;
  }
  printf("unload churn: %d rounds of 4 threads that loaded, used and unloaded the plugin, then exited; "
         "one heap throughout (%d secretmem files, VmLck %ld KiB)\n",
         rounds, footprint().secretmem, footprint().locked_kib);
  return 0;
}

/* Namespaces of their own, one after another. */
static int namespaces(const char *path) {
  for (int i = 0; i < 13; i++) {
    void *plugin = dlmopen(LM_ID_NEWLM, path, RTLD_NOW | RTLD_LOCAL);
    if (plugin == NULL) {
      fprintf(stderr, "unload: dlmopen %d: %s\n", i + 1, dlerror());
      return 1;
    }
    int (*use)(void) = (int (*)(void))dlsym(plugin, "plugin_use_secret");
    if (use == NULL || !use()) {
      fprintf(stderr, "unload: the plugin in namespace %d failed\n", i + 1);
      return 1;
    }
    dlclose(plugin);
  }
  if (mapped("libsecmem.so")) {
    fprintf(stderr, "unload: a namespace's libsecmem.so is still mapped after its dlclose\n");
    return 1;
  }
  printf("unload: 13 loads of the plugin into namespaces of their own, each unloaded with its libsecmem\n");
  return 0;
}

/* libsecmem.so under another name, loaded and unloaded again and again. */
static int renamed(const char *library) {
  char dir[] = "/tmp/secmem-unload-XXXXXX", copy[64];
  if (mkdtemp(dir) == NULL) return 2;
  snprintf(copy, sizeof copy, "%s/libvendored-1a2b.so", dir);
  FILE *in = fopen(library, "rb"), *out = fopen(copy, "wb");
  char buffer[65536];
  size_t n;
  while (in != NULL && out != NULL && (n = fread(buffer, 1, sizeof buffer, in)) > 0) fwrite(buffer, 1, n, out);
  if (in != NULL) fclose(in);
  if (out != NULL) fclose(out);
  struct footprint first = {0, 0, 0, 0};
  int ok = 1;
  for (int i = 0; i < 20 && ok; i++) {
    void *lib = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
    void *(*allocate)(size_t) = lib != NULL ? (void *(*)(size_t))dlsym(lib, "secmem_malloc") : NULL;
    void (*release)(void *) = lib != NULL ? (void (*)(void *))dlsym(lib, "secmem_free") : NULL;
    void *p = allocate != NULL && release != NULL ? allocate(64) : NULL;
    if (p == NULL) {
      fprintf(stderr, "unload: load %d of %s failed: %s\n", i + 1, copy, lib == NULL ? dlerror() : "no secret memory");
      ok = 0;
      break;
    }
    release(p);
    dlclose(lib);
    if (i == 0) first = footprint();
  }
  struct footprint now = footprint();
  unlink(copy);
  rmdir(dir);
  if (!ok) return 1;
  if (now.secretmem > first.secretmem || now.locked_kib > first.locked_kib ||
      now.size_kib > first.size_kib + 256 * 1024) {
    fprintf(stderr,
            "unload: libsecmem.so under another name, after 20 loads: secretmem files %d (first %d), VmLck %ld KiB "
            "(first %ld), VmSize %ld KiB (first %ld)\n",
            now.secretmem, first.secretmem, now.locked_kib, first.locked_kib, now.size_kib, first.size_kib);
    return 1;
  }
  printf("unload: libsecmem.so under another name, 20 loads: one heap throughout (%d secretmem files, VmLck %ld KiB)\n",
         now.secretmem, now.locked_kib);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  if (argc == 3 && strcmp(argv[2], "renamed") == 0) return renamed(argv[1]);
  g_plugin_path = argv[1];
  if (argc == 3 && strcmp(argv[2], "dlmopen") == 0) return namespaces(argv[1]);
  if ((argc == 4 || argc == 5) && strcmp(argv[2], "churn") == 0) {
    g_static = argc == 5 && strcmp(argv[4], "static") == 0;
    return churn(atoi(argv[3]));
  }
  g_static = argc == 3 && strcmp(argv[2], "static") == 0;
  if (argc != 2 && !g_static) return 2;
  void *plugin = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (plugin == NULL) {
    fprintf(stderr, "unload: %s\n", dlerror());
    return 1;
  }
  use_secret = (int (*)(void))dlsym(plugin, "plugin_use_secret");
  if (use_secret == NULL || !use_secret()) return 1;
  pthread_t thread;
  pthread_create(&thread, NULL, worker, NULL);
  pthread_mutex_lock(&lock);
  while (used == 0) pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  if (used != 1) return 1;
  dlclose(plugin);
  if (g_static) {
    if (mapped(argv[1])) {
      fprintf(stderr, "unload: the plugin is still mapped after dlclose\n");
      return 1;
    }
    release_worker(thread);
    printf("unload: a thread that used the heap exited after the plugin carrying libsecmem.a was unloaded\n");
    return 0;
  }
  struct footprint first = footprint();
  if (first.libsecmem == 0 || first.secretmem == 0) {
    fprintf(stderr,
            "unload: after dlclose, libsecmem.so mappings %d, secretmem files %d (both expected: it "
            "stays loaded, with its heap)\n",
            first.libsecmem, first.secretmem);
    return 1;
  }
  release_worker(thread);
  /* Load, use and unload it 100 times more: the same heap serves every load. */
  for (int i = 0; i < 100; i++) {
    plugin = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    use_secret = plugin != NULL ? (int (*)(void))dlsym(plugin, "plugin_use_secret") : NULL;
    if (use_secret == NULL || !use_secret()) {
      fprintf(stderr, "unload: load %d of the plugin failed\n", i + 2);
      return 1;
    }
    dlclose(plugin);
  }
  if (!same_heap("unload: after 100 more loads", first, footprint())) return 1;
  printf("unload: a thread that used the heap exited after the plugin was unloaded; 100 more loads used the same "
         "heap (%d secretmem files, VmLck %ld KiB)\n",
         first.secretmem, first.locked_kib);
  return 0;
}

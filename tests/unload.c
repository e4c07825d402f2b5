/* dlclose of a plugin that pulled in libsecmem: threads that used the heap
 * through it exit afterwards, and nothing of libsecmem is left to call (its
 * thread-cache key destructor would run in unmapped code). Exits 0 when the
 * process survives and libsecmem.so is gone from its maps.
 *   unload PLUGIN_PATH
 *   unload PLUGIN_PATH churn ROUNDS
 *     ROUNDS times, four threads at once each dlopen the plugin, use the heap
 *     through it, dlclose it and exit: the last dlclose of a round unloads
 *     libsecmem while other threads of the round may be retiring their
 *     caches (one waiting for the heap lock woke up in unmapped code). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int libsecmem_mapped(void) {
  FILE *maps = fopen("/proc/self/maps", "r");
  char line[512];
  int found = 0;
  while (maps != NULL && fgets(line, sizeof line, maps) != NULL)
    if (strstr(line, "libsecmem.so") != NULL) found = 1;
  if (maps != NULL) fclose(maps);
  return found;
}

static const char *g_plugin_path;

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
  for (int round = 0; round < rounds; round++) {
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, churner, NULL);
    for (int i = 0; i < 4; i++) {
      void *result = NULL;
      pthread_join(threads[i], &result);
      failed += result != NULL;
    }
  }
  if (failed != 0 || libsecmem_mapped()) {
    fprintf(stderr, "unload churn: %d threads failed, libsecmem.so %s\n", failed,
            libsecmem_mapped() ? "still mapped" : "unloaded");
    return 1;
  }
  printf("unload churn: %d rounds of 4 threads that loaded, used and unloaded the plugin, then exited\n", rounds);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[2], "churn") == 0) {
    g_plugin_path = argv[1];
    return churn(atoi(argv[3]));
  }
  if (argc != 2) return 2;
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
  if (libsecmem_mapped()) {
    fprintf(stderr, "unload: libsecmem.so is still mapped after dlclose\n");
    return 1;
  }
  pthread_mutex_lock(&lock);
  unloaded = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  pthread_join(thread, NULL);
  printf("unload: a thread that used the heap exited after libsecmem was unloaded\n");
  return 0;
}

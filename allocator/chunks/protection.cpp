#include "chunks/protection.h"

#include <sys/mman.h>

#include "platform/raw_syscall.h"

namespace secmem::protection {

namespace {

constexpr int kReadWrite = PROT_READ | PROT_WRITE;

// Chunk::prot's encoding: 0 for read-write, else the PROT_* value plus one.
uint8_t prot_code(int prot) { return prot == kReadWrite ? 0 : static_cast<uint8_t>(prot + 1); }

// Calls fn(addr, len, prot) for each run of pages with the same restricted protection.
template <typename F> void for_each_restricted(const Chunk *chunk, F fn) {
  if (chunk->restricted_pages == 0) return;
  if (chunk->huge) {
    fn(chunk->page_address(0), chunk->mapped_bytes(), chunk->prot[0] - 1);
    return;
  }
  for (uint32_t p = 0; p < chunk->mapped_pages;) {
    uint32_t end = p + 1;
    while (end < chunk->mapped_pages && chunk->prot[end] == chunk->prot[p]) ++end;
    if (chunk->prot[p] != 0) fn(chunk->page_address(p), size_t{end - p} * os::kPageSize, chunk->prot[p] - 1);
    p = end;
  }
}

} // namespace

namespace {

size_t g_mapping_splits = 0; // under the heap lock, as every record

// Whether page's protection differs from the page before's (a huge chunk's
// record is one value for the whole chunk: no split).
uint32_t changes_around(const Chunk *chunk, uint32_t page) {
  if (chunk->huge) return 0;
  return (page > 0 && chunk->prot[page - 1] != chunk->prot[page] ? 1 : 0) +
         (page + 1 < kSlotPages && chunk->prot[page + 1] != chunk->prot[page] ? 1 : 0);
}

void record(Chunk *chunk, uint32_t page, uint8_t value) {
  chunk->restricted_pages += (value != 0) - (chunk->prot[page] != 0);
  uint32_t before = changes_around(chunk, page);
  chunk->prot[page] = value;
  uint32_t after = changes_around(chunk, page);
  chunk->prot_changes = chunk->prot_changes + after - before;
  g_mapping_splits = g_mapping_splits + after - before;
}

} // namespace

size_t mapping_splits() { return g_mapping_splits; }

void forget(const Chunk *chunk) { g_mapping_splits -= chunk->prot_changes; }

// The record first, then the kernel: a signal handler on this thread may
// fork between the two, and the child (which copies its chunks and puts
// their protections back from Chunk::prot, and finishes this call when the
// handler returns) must not be left with a protection the record does not
// show. Kernel first, a run made over a former guard page came back in the
// child with the guard in its middle: the record said PROT_NONE at the fork,
// the child restored it, and this call then recorded read-write.
int set(Chunk *chunk, uint32_t first_page, uint32_t pages, int prot) {
  uint8_t value = prot_code(prot);
  uint32_t marks = chunk->huge ? 1 : pages;
  uint8_t before[kSlotPages];
  for (uint32_t i = 0; i < marks; ++i) {
    before[i] = chunk->prot[first_page + i];
    record(chunk, first_page + i, value);
  }
  int err = os::protect(chunk->page_address(first_page), size_t{pages} * os::kPageSize, prot);
  if (err == 0) return 0;
  // Refused (the mapping count, say), perhaps after changing part of the
  // range: the record goes back, and so does each page, as far as it can.
  for (uint32_t i = 0; i < marks; ++i) record(chunk, first_page + i, before[i]);
  if (chunk->huge) {
    os::protect(chunk->page_address(first_page), size_t{pages} * os::kPageSize,
                before[0] == 0 ? kReadWrite : before[0] - 1);
    return err;
  }
  for (uint32_t i = 0; i < marks;) {
    uint32_t end = i + 1;
    while (end < marks && before[end] == before[i]) ++end;
    os::protect(chunk->page_address(first_page + i), size_t{end - i} * os::kPageSize,
                before[i] == 0 ? kReadWrite : before[i] - 1);
    i = end;
  }
  return err;
}

int ensure(Chunk *chunk, uint32_t first_page, uint32_t pages, int prot) {
  uint8_t want = prot_code(prot);
  if (chunk->huge) return chunk->prot[0] == want ? 0 : set(chunk, 0, pages, prot);
  uint32_t end = first_page + pages;
  for (uint32_t p = first_page; p < end;) {
    if (chunk->prot[p] == want) {
      ++p;
      continue;
    }
    uint32_t q = p + 1;
    while (q < end && chunk->prot[q] != want) ++q;
    if (int err = set(chunk, p, q - p, prot); err != 0) return err;
    p = q;
  }
  return 0;
}

int open_restricted(Chunk *chunk) {
  int first_err = 0;
  for_each_restricted(chunk, [&first_err](void *addr, size_t len, int) {
    int err = os::protect(addr, len, PROT_READ);
    if (first_err == 0) first_err = err;
  });
  return first_err;
}

int open_all_in_child(Chunk *chunk) {
  return os::protect(reinterpret_cast<void *>(chunk->base), chunk->mapped_bytes(), PROT_READ | PROT_WRITE);
}

int open_touched_for_copy(Chunk *chunk) {
  uint32_t pages = chunk->huge ? chunk->mapped_pages : chunk->touched_pages;
  return os::protect(reinterpret_cast<void *>(chunk->base), size_t{pages} * os::kPageSize, kReadWrite);
}

namespace {

// A page in no run that kept a freed large block's guard (sealed pages are never in no run).
bool free_guard(const Chunk *chunk, uint32_t page) {
  return chunk->prot[page] != 0 && !bitmap::test(chunk->used, page) && !bitmap::test(chunk->sealed, page);
}

} // namespace

SECMEM_FORK_CHILD_TEXT void forget_free_guards(Chunk *chunk) {
  if (chunk->huge || chunk->restricted_pages == 0) return;
  for (uint32_t page = 0; page < chunk->mapped_pages; ++page)
    if (free_guard(chunk, page)) {
      record(chunk, page, 0);
      bitmap::clear(chunk->idle_guards, page);
    }
}

bool open_free_guards(Chunk *chunk, bool now) {
  if (chunk->huge) return false;
  if (chunk->restricted_pages == 0) { // none left (a fork child forgot its free guards)
    bitmap::clear_range(chunk->idle_guards, 0, kSlotPages);
    return false;
  }
  bool left = false;
  for (uint32_t page = 0; page < chunk->mapped_pages;) {
    if (!free_guard(chunk, page)) {
      bitmap::clear(chunk->idle_guards, page);
      ++page;
      continue;
    }
    if (!now && !bitmap::test(chunk->idle_guards, page)) { // first seen: the next fork opens it
      bitmap::set(chunk->idle_guards, page);
      left = true;
      ++page;
      continue;
    }
    uint32_t end = page + 1;
    while (end < chunk->mapped_pages && free_guard(chunk, end) && (now || bitmap::test(chunk->idle_guards, end))) ++end;
    if (set(chunk, page, end - page, kReadWrite) == 0)
      bitmap::clear_range(chunk->idle_guards, page, end - page);
    else
      left = true;
    page = end;
  }
  return left;
}

void close_again(Chunk *chunk) {
  for_each_restricted(chunk, [](void *addr, size_t len, int prot) { os::protect(addr, len, prot); });
}

SECMEM_FORK_CHILD_TEXT int restore_restricted(Chunk *chunk) {
  int first_err = 0;
  for_each_restricted(chunk, [chunk, &first_err](void *addr, size_t len, int prot) {
    int err = os::protect(addr, len, prot);
    if (err == 0) return;
    // Refused (the mapping count: a run inside the chunk's one mapping
    // splits it): guards go without, as a block's do where mprotect refuses
    // when it is made, and the record says so; a sealed page cannot.
    auto first = static_cast<uint32_t>((reinterpret_cast<uintptr_t>(addr) - chunk->base) / os::kPageSize);
    uint32_t marks = chunk->huge ? 1 : static_cast<uint32_t>(len / os::kPageSize);
    bool sealed = chunk->huge; // a huge chunk's restricted pages are its sealed block
    for (uint32_t q = first; q < first + marks; ++q) sealed = sealed || bitmap::test(chunk->sealed, q);
    if (!sealed)
      for (uint32_t q = first; q < first + marks; ++q) record(chunk, q, 0);
    else if (first_err == 0)
      first_err = err;
  });
  return first_err;
}

} // namespace secmem::protection

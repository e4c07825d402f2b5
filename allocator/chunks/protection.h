// Page protection of a chunk's pages, mirrored in Chunk::prot so that the
// fork copy and the child can find guard pages and sealed blocks again.
// Invariant: Chunk::prot holds every page whose protection is not read-write.
// Not thread-safe: callers hold the heap lock.
#pragma once

#include <cstdint>

#include "chunks/chunk.h"

namespace secmem::protection {

// The mappings the heap's protections add to the process: in the chunks
// listed, the pages whose protection differs from the page before's (each
// guard and sealed block in the middle of a chunk splits its mapping).
size_t mapping_splits();
// A chunk given back: its splits no longer count.
void forget(const Chunk *chunk);

// Sets pages [first_page, first_page+pages) (a huge chunk: first_page 0 and
// all its pages) to PROT_NONE, PROT_READ or PROT_READ|PROT_WRITE. 0 or the errno of mprotect.
int set(Chunk *chunk, uint32_t first_page, uint32_t pages, int prot);
// The same, calling mprotect only for the pages not already so (free pages
// keep the protection they last had, so a freed large block's guards are
// still in place when the run is reused for another, until a fork finds the
// run free for the second time, not taken since: open_free_guards; nor in a
// fork child's memfd_secret copy: forget_free_guards).
int ensure(Chunk *chunk, uint32_t first_page, uint32_t pages, int prot);
// Makes the chunk's restricted pages readable (for the fork copy, and for
// mlock, which cannot fault in PROT_NONE pages). 0, or the first errno of a
// refused mprotect (a seccomp filter, the map count): pages left closed.
int open_restricted(Chunk *chunk);
// In a fork child, whose mappings no other thread shares: the whole chunk
// read-write, whatever the record says (a fork from a signal handler may
// interrupt an mprotect before it is recorded). Fewer mappings, too. 0, or
// mprotect's errno.
int open_all_in_child(Chunk *chunk);
// In a fork child, before restore_restricted: the guards left on pages in no
// run (a freed large block's, kept for the next block there in the parent)
// are recorded read-write, so that the child does not put them back (an
// mprotect and a mapping each, at every fork); a block made there later
// sets its own. Sealed pages are never in no run.
void forget_free_guards(Chunk *chunk);
// In the parent, before a fork: the same guards (pages in no run, not
// sealed, restricted) that the last fork found so too (Chunk::idle_guards)
// set read-write, one mprotect per run of them; the others marked for the
// next fork. Whether any such guard is left (marked, or refused by
// mprotect: those pages keep their guard and its record).
// now: every such guard at once, however recent (the heap's share of the
// mapping count is spent: ChunkPool::mappings_allowed).
bool open_free_guards(Chunk *chunk, bool now = false);
// Puts their protection back; returns the first mprotect error on a sealed
// page, or 0 (guards the kernel will not protect again, at the mapping
// count, are recorded read-write: they go without).
int restore_restricted(Chunk *chunk);
// After an open_restricted that was refused part of the way: each
// restricted run set back as the record says, refusals left as they are
// (a run never opened is still closed, so the record stays right; one
// opened and not closed again stays readable).
void close_again(Chunk *chunk);
// For a parent's fork copy when a signal handler interrupted a protection
// change on the forking thread (the record may be ahead of the kernel by
// one call): the chunk's touched pages read-write (widened only: other
// threads go on writing their blocks), then the restricted pages as the
// record says (restore_restricted), which the interrupted call then sets
// again.
int open_touched_for_copy(Chunk *chunk);

} // namespace secmem::protection

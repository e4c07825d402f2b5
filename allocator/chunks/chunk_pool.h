// The chunk pool: 2 MiB-aligned chunks of secret memory inside the reserved
// range, in the tier the TierMapper gives them. It hands out page runs (for
// spans) and guarded runs (for large blocks, with their guard pages), faults
// pages in batches, and answers its own facts for the heap's statistics.
//
// Not thread-safe: the heap calls it under its lock, except for the lookups
// (chunk_of, in_range), which read tables that are only written before a
// block can be handed out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "chunks/chunk.h"
#include "chunks/reservation.h"
#include "chunks/tiers.h"
#include "config/config.h"
#include "support/object_pool.h"

namespace secmem {

// What the pool knows about itself, for secmem_get_stats.
struct PoolFacts {
  size_t mapped_bytes[kNumTiers] = {};
  size_t mlocked_bytes = 0; // the locked tier's touched pages, which mlock charges
  size_t pages_touched = 0;
  size_t chunks = 0;
  TierCounters tiers;
  uint64_t fork_privatisations = 0;
  int weakest_tier = -1; // the weakest tier holding a chunk; -1: no chunk
};

// A large block's pages with their guards, built and taken down by one call each.
struct GuardedRun {
  Chunk *chunk = nullptr;
  uint32_t first_page = 0; // the block's first page
  uint32_t pages = 0;      // the block's pages
  uint32_t guard_lead = 0; // PROT_NONE pages before the block (its alignment in pages)
  uint32_t guard_tail = 0; // and after it; a huge chunk's guards are its slots' unmapped pages

  uintptr_t start() const { return chunk->base + size_t{first_page} * os::kPageSize; }
};

class ChunkPool {
public:
  // Reserves the address range. False (with one diagnostic) if none can be had.
  bool init(const Config &config);
  // SECMEM_NODUMP=always at start-up (TierMapper::make_undumpable).
  bool make_undumpable() { return tiers_.make_undumpable(); }
  // Called (under the heap lock, from inside alloc_run or alloc_guarded)
  // when a chunk's run cannot be found in the chunks there are and a new one
  // cannot be charged to RLIMIT_MEMLOCK, before the pool falls back to a
  // weaker tier or fails: the heap gives back the free blocks it keeps for
  // speed (thread caches), which may free the run needed. The pool then
  // looks again.
  using Reclaimer = void (*)();
  void set_reclaimer(Reclaimer reclaimer) { reclaimer_ = reclaimer; }
  // Called (under the heap lock, from inside alloc_run or alloc_guarded)
  // before the pool makes pages for a run (past a chunk's touched pages, in
  // its cold ones, or a new chunk): the heap gives back the calling thread's
  // own kept large blocks (true if it had any), and the pool looks again
  // first.
  using OwnReturner = bool (*)();
  void set_own_returner(OwnReturner returner) { own_returner_ = returner; }

  // TierMapper::first_memlock_budget.
  size_t first_memlock_budget() const { return tiers_.first_memlock_budget(); }

  bool in_range(const void *p) const { return reservation_.in_range(p); }
  Chunk *chunk_of(const void *p) const { return reservation_.chunk_of(p); }
  uint32_t page_in_slot(const void *p) const { return reservation_.page_in_slot(p); }
  bool freed_huge_at(const void *p) const { return reservation_.freed_huge_at(p); }

  // pages read-write pages in a chunk, faulted in. False with errno ENOMEM.
  bool alloc_run(uint32_t pages, Chunk **chunk, uint32_t *first_page);
  void free_run(Chunk *chunk, uint32_t first_page, uint32_t pages);
  void keep_closed_pages_out(Chunk *chunk, uint32_t first_page, uint32_t pages);

  // pages read-write pages aligned to alignment (a power of two up to
  // kChunkSize), with PROT_NONE guards on both sides where mprotect allows:
  // inside a shared chunk, or a chunk of its own for huge blocks. False with
  // errno ENOMEM. spare: only from pages already in memory (no new chunk,
  // no page made or warmed for it), for a block no one has asked for yet.
  // claimant (a thread cache; nullptr: none): its runs come first from the
  // chunk at prefer (an address in it) if no one else claims it, else from a
  // chunk no one claims, which it then claims; else from any chunk.
  bool alloc_guarded(size_t pages, size_t alignment, GuardedRun *out, bool spare = false, uintptr_t prefer = 0,
                     const void *claimant = nullptr);
  // Ends the claimant's claims (its thread is gone).
  void forget_claims(const void *claimant);
  // Gives the run back; in a shared chunk its guards stay for the next
  // block there (until open_free_guards).
  void free_guarded(const GuardedRun &run);
  // Before a fork (under the heap lock, before stage_fork; not when a signal
  // handler interrupted a change of the pool): the guards that pages in no
  // run kept from a freed large block, and that the last fork found so
  // too, in no run since, go back to read-write, so that the chunk is one
  // mapping again. Each guard splits the chunk's mapping, and the kernel's
  // fork duplicates, and the child's copy unmaps, every mapping: a process
  // that had held eight 64 KiB blocks and freed them forked in 304 us
  // against 264 for one that never had (18 mappings more; bench/run's
  // ForkWithKeyShrunk and ForkWithKey/0). One mprotect per
  // run of such pages, once; a block made there later sets its own guards.
  // Not at the first fork that finds them: a thread's kept blocks go back
  // to the pool at each fork, and one that makes and frees large blocks
  // between forks takes the same runs again (opened at once, each run's
  // guards were made again after each fork: eight 64 KiB blocks made and
  // freed between forks, 335-371 us a cycle against 294-296).
  void open_free_guards();
  // Sets the block's protection (a huge chunk's: all of it). 0 or the errno of mprotect.
  int protect_guarded(const GuardedRun &run, int prot);
  // Whether the heap's guards and sealed blocks may split its memory into
  // more mappings: not past a quarter of vm.max_map_count (chunk_pool.cpp),
  // where large blocks go without guards, and new sealed blocks and scopes
  // that would open one are refused (ENOMEM); said once.
  bool mappings_allowed();

  void facts(PoolFacts *out) const;
  const char *weakest_tier_name() const;
  // Before a fork (under the heap lock, before stage_fork): whether a
  // staging file that no child is known to hold spans the chunks the
  // parent would stage (staging would then make no file; it makes pages
  // only where the heap grew into the file's slack), and in *in_use_bytes
  // the pages in runs of those chunks, which the copy takes.
  bool staging_file_ready(size_t *in_use_bytes);
  uintptr_t reserved_top() const { return reservation_.top(); }
  size_t reserved_bytes() const { return reservation_.size(); }

  // fork: the child gets private copies of memfd_secret chunks (which are
  // MAP_SHARED) at the same addresses (fork.cpp). stage_fork runs under the
  // heap lock before the fork gate closes (it makes and faults in pages);
  // prepare_fork after (it copies).
  // interrupted: a signal handler forks on a thread whose heap operation it
  // interrupted. given_back_pages: pages of the runs that threads' caches
  // kept for reuse and gave back for this fork (the heap's
  // drop_other_threads_kept_large, guards counted): the threads take as
  // many again after it, so as many stale pages in a staging file do not
  // mean the heap shrank. fork_reentered: another fork handler uses the
  // heap between prepare_fork and the fork (the staged copy would be out of
  // date).
  void stage_fork(bool interrupted, int parent_pid, uint32_t given_back_pages = 0);
  void prepare_fork();
  // nest: how many forks made inside the outer one are in progress (a fork
  // handler's or a signal handler's).
  void fork_reentered(int nest);
  // forks_done: this fork's number (heap/state.h Heap::forks_done).
  void after_fork_parent(uint64_t forks_done);
  // nested_depth: -1 for the fork whose handlers run first; else the child
  // of a fork made inside it (at that depth), which copies for itself while
  // its parent waits (prepare_nested_fork, after_nested_fork_parent).
  void after_fork_child(int nested_depth);
  void prepare_nested_fork(unsigned depth);
  void after_nested_fork_parent(unsigned depth);
  // An interposer of the wait calls sees the program reap its children
  // (secmem/internal/interpose.h): watch_reaping once, note_reaped for each
  // child reaped by a call that began when forks_done_before forks were done.
  // Async-signal-safe: a lock-free log, read under the heap lock.
  void watch_reaping();
  void note_reaped(int pid, uint64_t forks_done_before);

private:
  Chunk *new_chunk(uint32_t min_pages, bool huge, size_t alignment = kChunkSize);
  bool find_run(uint32_t pages, uint32_t align_pages, Chunk **chunk, uint32_t *first, bool spare = false,
                uintptr_t prefer = 0, const void *claimant = nullptr);
  bool ensure_touched(Chunk *chunk, uint32_t end_page);
  bool warm(Chunk *chunk, uint32_t first, uint32_t pages);
  void mark_pages(Chunk *chunk, uint32_t first, uint32_t pages, bool used);
  void release_chunk(Chunk *chunk);
  os::Released to_reserve(void *addr, size_t len);
  void move_tier(Chunk *chunk, Tier to);
  void stage_in_parent(Chunk *chunk);
  void privatise_in_child(Chunk *chunk, bool use_staged_copy);
  void map_staged_in_child(Chunk *chunk, int fd, bool fd_ours);
  void refresh_staging(bool ask_kernel);
  void unknown_descriptor(int fds[2]);
  void check_staging_fds();
  int take_staging(size_t bytes);
  char *open_staging(int slot);
  void close_staging(int slot);
  void unmap_staging();
  void drop_staging(int slot);
  bool fill_staging(bool copy);
  void plan_child_room(size_t copy_bytes, size_t file_bytes);

  const Config *config_ = nullptr;
  Reclaimer reclaimer_ = nullptr;
  OwnReturner own_returner_ = nullptr;
  Reservation reservation_;
  TierMapper tiers_;
  ChunkList chunks_; // strongest tier first, so runs come from there
  ObjectPool<Chunk> chunk_meta_;
  size_t mapped_bytes_[kNumTiers] = {};
  size_t pages_touched_ = 0;
  size_t chunk_count_ = 0;
  uint64_t fork_privatisations_ = 0;
  int fork_pipe_[2] = {-1, -1}; // the child writes a byte when its copies are in place
  // Staging files: memfd_secret files the parent copies its chunks into
  // before fork, which the child maps in their place. A file goes back to use
  // once the child that took it is gone.
  struct StagingFile {
    int fd = -1;
    os::FileId id; // what fd must still refer to
    size_t bytes = 0;
    char *map = nullptr;  // the parent's mapping (PROT_NONE between forks), or nullptr
    uint32_t handout = 0; // counts the children given this slot's file
    int holder = 0;       // the pid of the child that maps it (0: not told yet)
    uint64_t forked = 0;  // that child's fork's number (Heap::forks_done), 0: not yet
    bool in_use = false;  // a child may still map it
  };
  // Runs tried for one allocation where the kernel will not open a former
  // guard page (keep_closed_pages_out).
  static constexpr int kClosedRunAttempts = 16;
  static constexpr int kStagingFiles = 4;
  StagingFile staging_[kStagingFiles];
  // Children the program reaped, as an interposer of the wait calls saw them:
  // {pid, forks done when the wait call began}, one word each. Written by any
  // thread or signal handler without the lock, read and cleared under it. An
  // entry overwritten before it is read frees nothing: the kernel is asked
  // instead. Only this process's own calls count (owner: the pid that forks,
  // its parent's pid, its process group and its pid namespace): another
  // process sharing its memory (clone with CLONE_VM, a vfork child) may reap
  // its own children, in a pid namespace of its own, under the same numbers,
  // and have the same pid there (1, when both are the first of theirs). The
  // namespace is read only where the caller's parent or group is outside its
  // namespace or is not the owner's (ChunkPool::note_reaped): a process that
  // shares the memory, in another namespace, with all three numbers the
  // owner's is not told apart. On the heap's page, which the parent's fork
  // handler writes anyway: a wait call after the fork takes no fault.
  struct ReapLog {
    static constexpr int kEntries = 64;
    static_assert((std::numeric_limits<uint16_t>::max() + 1) % kEntries == 0, "next wraps at a multiple of kEntries");
    static_assert(std::atomic<uint16_t>::is_always_lock_free, "written from signal handlers");
    std::atomic<uint64_t> entries[kEntries];
    std::atomic<uint16_t> next; // wraps at a multiple of kEntries
    std::atomic<bool> watched;
    std::atomic<bool> tracking; // a staging file may be held by a child
    std::atomic<int> owner;
    std::atomic<int> owner_parent;         // its getppid() then
    std::atomic<int> owner_group;          // its getpgid(0) then
    std::atomic<uint64_t> owner_namespace; // its pid namespace's inode; 0: unknown (read: entries are not taken)
  };
  ReapLog reaped_{};
  int fork_slot_ = -1;       // this fork's staging file, or -1
  char *fork_map_ = nullptr; // and its mapping, read-write from stage_fork to the end of the copy
  uint32_t staging_evict_ = 0;
  uint32_t staging_stale_pages_ = 0; // in memory, not in use: left by earlier forks (fill_staging)
  uint32_t staging_taken_pages_ = 0; // and those this fork's copy takes
  // mincore's answer for a window of the staging mapping (fill_staging): here
  // rather than on the stack, whose pages past the fork's own depth would
  // each take a copy-on-write fault at every fork.
  unsigned char in_memory_[kSlotPages] = {};
  static constexpr uint32_t kStaleStagingPages = 64;
  static constexpr size_t kStagingSlackBytes = size_t{64} << 12;
  // Pages of a staging file's tail a child may grow into (plan_child_room).
  static constexpr uint32_t kChildRoomPages = 64;
  bool fork_staging_stale_ = false;   // fork_reentered found no pipe: the staged copy is out of date
  int fork_parent_pid_ = 0;           // the forking process (its getpid)
  os::FileId fork_pipe_id_;           // what fork_pipe_ and nested_pipe_ are, for the child's checks
  bool fork_reentered_ = false;       // fork_reentered ran in this fork
  bool fork_interrupted_ = false;     // stage_fork's interrupted: protections may be halfway changed
  bool reserve_refused_said_ = false; // to_reserve's one message
  // Whether the kernel's fork of a level (-1: the outer fork; else a
  // nesting depth) has happened: the forking thread's children before it
  // (fork.cpp).
  static constexpr int kChildrenBefore = 64;
  static constexpr int kChildCopyWaitMs = 2000;
  struct ChildrenBefore {
    int32_t pids[kChildrenBefore] = {};
    int count = -1; // -1: not known
  };
  void note_children_before_fork(int level);
  bool open_copy_pipe(int level);
  bool forked_since_noted(int level) const;
  void wait_for_copies(int nest);
  static constexpr unsigned kNestedForks = 4;
  // A nested fork's child writes a byte to its pipe when its copies are in place.
  int nested_pipe_[kNestedForks][2] = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}};
  os::FileId nested_pipe_id_[kNestedForks];
  ChildrenBefore children_before_[kNestedForks + 1]; // [0] the outer fork, [1 + depth] the others
  // A pipe's read end given up after a wait that timed out (wait_for_copies),
  // closed when that fork is over; the same slots.
  int stale_read_[kNestedForks + 1] = {-1, -1, -1, -1, -1};
  os::FileId stale_read_id_[kNestedForks + 1];
  void close_stale_read(int slot);
  void keep_read_end(int slot, int read_end);
  void keep_unwaited(int slot, int read_end);
  int staging_pipe_[2] = {-1, -1}; // each child says which file it took, and its pid (a socket pair, or a pipe)
  os::FileId staging_pipe_id_[2];
  FallbackReason degraded_why_ = FallbackReason::kOther; // the child's copy of a chunk left memfd_secret
  int degraded_err_ = 0;
};

} // namespace secmem

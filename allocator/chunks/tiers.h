// Tier policy: maps a chunk's pages in the strongest tier the configuration
// allows (memfd_secret, then mlock'ed, then unlocked anonymous memory), sized
// to the RLIMIT_MEMLOCK budget, with its first pages faulted in through the
// kernel; says once, clearly, when a chunk lands lower or nowhere.
//
// Not thread-safe: the pool calls it under the heap lock.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chunks/chunk.h"
#include "config/config.h"
#include "platform/diag.h"
#include "platform/linux_facts.h"

namespace secmem {

struct TierCounters {
  uint64_t fallbacks[kNumFallbackReasons] = {};
  uint64_t failed_chunks = 0; // a chunk was needed and no allowed tier gave one
};

class TierMapper {
public:
  void init(const Config &config) { config_ = &config; }

  struct Mapped {
    Tier tier = Tier::kSecret;
    uint32_t pages = 0;
    uint32_t touched = 0;
  };
  // Maps a chunk at addr: exactly min_pages, or (flexible) as many pages up
  // to kMaxChunkPages as the budget allows but at least min_pages. Tries the
  // top tier, then weaker ones as the policy allows. False with errno ENOMEM.
  // With defer_memlock set, a tier refused for RLIMIT_MEMLOCK ends the call
  // there (false, memlock_deferred() true), before any weaker tier, count or
  // message: the pool has the heap give back what it keeps for speed, and
  // asks again.
  bool map_chunk(uintptr_t addr, uint32_t min_pages, bool flexible, Mapped *out);
  void defer_memlock(bool defer) {
    defer_memlock_ = defer;
    memlock_deferred_ = false;
  }
  bool memlock_deferred() const { return memlock_deferred_; }

  // First touch of fresh pages in tier: 0 or an errno (the kernel refused
  // to charge them, or a seccomp filter may kill on mlock). zero: where
  // several runs are touched in a row, one /dev/zero for them all.
  int fault_in(Tier tier, void *addr, size_t len, os::ZeroSource *zero = nullptr);

  // Whether call (memfd_secret, mlock) may be made without risking the
  // process: no seccomp filter is in force, or one was in force when the
  // call was first needed and a short-lived child made the call unharmed.
  // A filter that appears later (Seccomp_filters grew) is never tested: the
  // call is not made again, and the tiers degrade as the policy says.
  bool may_call(linux_facts::ProbeCall call);
  // Whether may_call has a verdict on call (a fork child inherits it).
  bool checked(linux_facts::ProbeCall call) const { return calls_[static_cast<int>(call)].checked; }
  // may_call's last answer was for now only: no descriptor to read /proc with.
  bool last_check_for_now() const { return last_for_now_; }
  // may_call from this thread's status as it is now, not the last verdict
  // standing (a fork child: a filter may have reached it since the parent's).
  bool may_call_now(linux_facts::ProbeCall call) { return may_call(call) && !last_for_now_; }
  // Why a tier was refused, as the messages say it ("SIGSYS: ...", "EAGAIN: ...").
  // (A sandbox refusal's text: why_text, or the last one may_call gave.)
  void describe(diag::Line &line, FallbackReason why, int err, const char *why_text = nullptr,
                bool why_for_now = false) const;
  // The RLIMIT_MEMLOCK budget (bytes) when the first locked chunk was
  // mapped; SIZE_MAX when unlimited, or when no locked chunk was mapped.
  size_t first_memlock_budget() const { return first_memlock_budget_; }
  // A kernel that charges memlock at first touch refused a batch of a chunk's pages.
  void note_touch_refused() { counters_.fallbacks[static_cast<int>(FallbackReason::kMemlock)]++; }
  // A chunk now lives in tier (new, or degraded in a fork child): SECMEM_NODUMP may act.
  void note_tier(Tier tier);
  // prctl(PR_SET_DUMPABLE, 0) where no seccomp filter may kill on it. True
  // if the process is non-dumpable now; else says why not, once: in a line
  // of its own, or at the end of into (a fallback's message).
  bool make_undumpable(diag::Line *into = nullptr);
  // Says once that chunks now land in tier `to`, and why; counted per cause.
  // (why_text: the configured tier's sandbox refusal, as map_chunk saved it.)
  void report_fallback(Tier to, FallbackReason why, int err, const char *why_text = nullptr, bool why_for_now = false);
  void count_fallback(FallbackReason why) { counters_.fallbacks[static_cast<int>(why)]++; }
  // The cause of a memfd_secret refusal with errno err.
  static FallbackReason secret_refusal(int err);
  // Whether a refused top tier may send a chunk to a weaker one (policy).
  bool may_degrade() const;

  const TierCounters &counters() const { return counters_; }

private:
  int map_one(Tier tier, uintptr_t addr, uint32_t min_pages, bool flexible, Mapped *out, FallbackReason *why);
  // why: the first tier's refusal; last: the last tier tried, when it is
  // another, with its own (kNumTiers: none).
  void report_failure(FallbackReason why, int err, const char *why_text, bool why_for_now, int last = kNumTiers,
                      FallbackReason last_why = FallbackReason::kOther, int last_err = 0);
  bool refused_by_sandbox(linux_facts::ProbeCall call) const; // may_call said no

  // What may_call learnt of one call.
  struct CallCheck {
    bool checked = false;
    bool status_known = false; // /proc/self/status was readable then
    size_t filters = 0;        // Seccomp_filters then
    bool safe = true;
    const char *why = nullptr; // when not safe
  };
  CallCheck calls_[linux_facts::kProbeCalls]; // indexed by ProbeCall
  bool last_for_now_ = false;           // may_call's last answer was for now only (no descriptor to read /proc with)
  bool unreadable_before_seen_ = false; // the status could not be read (EMFILE) before it first was
  uint16_t first_filters_ = 0;          // Seccomp_filters at the first status read
  const char *sandbox_why_ = nullptr;   // the last unsafe call's reason, for the message
  bool status_seen_ = false;            // /proc/thread-self/status was readable once
  bool sandbox_why_for_now_ = false;    // sandbox_why_ is the want of a descriptor (EMFILE), not a verdict
  // A tier between the configured one and the one a chunk landed in that a
  // seccomp verdict refused (map_chunk), for the fallback's message.
  bool skipped_for_sandbox_ = false;
  bool undumpable_refusal_said_ = false; // make_undumpable's one message
  bool weak_tier_seen_ = false;          // a chunk landed where SECMEM_NODUMP=fallback acts

  const Config *config_ = nullptr;
  TierCounters counters_;
  bool secret_refused_ = false; // ENOSYS/EPERM: memfd_secret will not work in this process
  FallbackReason secret_refusal_ = FallbackReason::kOther;
  int secret_refusal_errno_ = 0;
  bool reported_[kNumTiers] = {};
  bool reported_failure_ = false;
  bool defer_memlock_ = false;
  bool memlock_deferred_ = false;
  bool undumpable_ = false; // SECMEM_NODUMP=fallback has acted
  size_t first_memlock_budget_ = SIZE_MAX;
  bool memlock_budget_read_ = false;
};

} // namespace secmem

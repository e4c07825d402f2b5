#include "chunks/tiers.h"

#include <algorithm>
#include <cerrno>

#include "config/policy.h"
#include "platform/diag.h"
#include "platform/raw_syscall.h"

namespace secmem {

namespace {

const char *reason_text(FallbackReason why) {
  switch (why) {
  case FallbackReason::kNoKernelSupport: return "no kernel support, or secretmem.enable=0";
  case FallbackReason::kRefused: return "refused, as by a seccomp filter";
  case FallbackReason::kMemlock: return "RLIMIT_MEMLOCK budget spent";
  case FallbackReason::kSandbox:
  case FallbackReason::kOther: break;
  }
  return "mapping failed";
}

// Indexed by Tier.
constexpr struct {
  const char *name;
  const char *description;
} kTierText[kNumTiers] = {
    {"memfd_secret", "memfd_secret"},
    {"mlock", "mlock'ed anonymous memory (MADV_DONTDUMP)"},
    {"unlocked", "unlocked anonymous memory (MADV_DONTDUMP; it can be swapped)"},
};

const char *tier_description(Tier tier) { return kTierText[static_cast<int>(tier)].description; }

} // namespace

const char *tier_name(Tier tier) { return kTierText[static_cast<int>(tier)].name; }

// First touch: through the kernel for memfd_secret, by mlock for the locked
// tier; unlocked pages fault on use.
int TierMapper::fault_in(Tier tier, void *addr, size_t len, os::ZeroSource *zero) {
  switch (tier) {
  case Tier::kSecret: return zero != nullptr ? zero->touch(addr, len) : os::touch_through_kernel(addr, len);
  case Tier::kLocked: return may_call(linux_facts::ProbeCall::kMlock) ? os::lock_range(addr, len) : EPERM;
  case Tier::kUnlocked: break;
  }
  return 0;
}

SECMEM_FORK_CHILD_TEXT bool TierMapper::may_call(linux_facts::ProbeCall call) {
  CallCheck &check = calls_[static_cast<int>(call)];
  linux_facts::SeccompState state = linux_facts::seccomp_state();
  last_for_now_ = state.for_now;
  // What the first status read found: the filters in force from the start
  // (then tried in a child, below), against which later ones count as
  // installed since; and whether the status was unreadable for want of a
  // descriptor before that (a filter may have come meanwhile).
  bool first_read = state.known && !status_seen_;
  if (first_read) {
    status_seen_ = true;
    first_filters_ = static_cast<uint16_t>(state.filters < UINT16_MAX ? state.filters : UINT16_MAX);
  }
  if (state.for_now && !status_seen_) unreadable_before_seen_ = true;
  if (state.for_now) {
    // The status file could not be opened for want of a descriptor: the last
    // verdict stands. A call never checked is not made this time: a filter
    // may have come since the status was last read (OpenSSH's pre-auth child
    // installs one, then sets RLIMIT_NOFILE to 0), and one that kills on
    // clone would kill a trial in a child too.
    if (check.checked) {
      if (!check.safe) sandbox_why_ = check.why;
      sandbox_why_for_now_ = false;
      return check.safe;
    }
    sandbox_why_ = "no descriptor free to read the seccomp status with, and a filter that kills on it may be in force";
    sandbox_why_for_now_ = true;
    return false;
  }
  // Filters are per thread: one without any cannot be killed, whatever
  // other threads' filters made of the call.
  if (state.known && !state.filtered) {
    if (!check.checked) {
      check.checked = check.status_known = true;
      check.filters = 0;
    }
    status_seen_ = true;
    return true;
  }
  if (check.checked && !check.safe) {
    sandbox_why_ = check.why;
    sandbox_why_for_now_ = false;
    return false;
  }
  // A trial in a child only under the filters the first status read found
  // (a systemd unit's, from exec), read on a kernel that counts them: a
  // filter installed since, or other filters (a thread's own, which may be
  // fewer: filters are per thread), may kill on the trial's clone.
  bool same_filters = state.filters == first_filters_ && (state.filters_counted || first_read);
  if (!check.checked && state.filtered && state.filters_counted && state.filters < first_filters_ &&
      !unreadable_before_seen_) {
    // Fewer than at start-up: not made on this thread, no verdict kept for the others.
    sandbox_why_ = "this thread's seccomp filters are not those in force at start-up (filters are per thread) and "
                   "may kill on it, so it is not made here";
    sandbox_why_for_now_ = false;
    return false;
  }
  if (!check.checked) {
    check.checked = true;
    check.status_known = state.known;
    check.filters = state.filters;
    if (state.filtered && unreadable_before_seen_) {
      check.safe = false;
      check.why = "a seccomp filter may have come while the status could not be read (no descriptor free), and it "
                  "may kill on it, so it is not tried";
    } else if ((!state.known && (status_seen_ || unreadable_before_seen_)) || (state.filtered && !same_filters)) {
      // It was readable before, and a sandbox (OpenSSH's refuses open) took
      // it away; or a filter came since it was first read.
      check.safe = false;
      check.why = "a seccomp filter installed after start-up may kill on it, so it is not tried again";
    } else if (!state.known || state.filtered) {
      // A filter in force, or no status to say (never readable: no /proc, or
      // a sandbox that refused open from the start): tried in a child first.
      linux_facts::ProbeOutcome outcome = linux_facts::probe_in_child(call);
      check.safe = outcome == linux_facts::ProbeOutcome::kWorked || outcome == linux_facts::ProbeOutcome::kRefused;
      check.why = outcome == linux_facts::ProbeOutcome::kKilled
                      ? "a seccomp filter here kills on it"
                      : "a seccomp filter is in force and it could not be tried safely in a child";
    }
  } else if ((check.status_known && !state.known) || state.filters > check.filters) {
    check.safe = false;
    check.why = "a seccomp filter installed after start-up may kill on it, so it is not tried again";
  } else if (state.filtered && state.filters < check.filters) {
    // Fewer here than where the verdict was taken: other filters, which may
    // kill on it. Not made on this thread; the verdict stands for the others.
    if (state.known) status_seen_ = true;
    sandbox_why_ = "this thread's seccomp filters are not those it was tried under (filters are per thread) and may "
                   "kill on it, so it is not made here";
    sandbox_why_for_now_ = false;
    return false;
  }
  if (state.known) status_seen_ = true;
  if (!check.safe) {
    sandbox_why_ = check.why;
    sandbox_why_for_now_ = false;
  }
  return check.safe;
}

// Maps one tier at addr. Returns 0 or an errno, with why set.
int TierMapper::map_one(Tier tier, uintptr_t addr, uint32_t min_pages, bool flexible, Mapped *out,
                        FallbackReason *why) {
  if (tier == Tier::kSecret && !secret_refused_ && !may_call(linux_facts::ProbeCall::kMemfdSecret)) {
    if (sandbox_why_for_now_) { // no descriptor to read /proc with, and no verdict: this chunk only
      *why = FallbackReason::kOther;
      return EMFILE;
    }
    // Refused by the verdict on this thread's filters (may_call keeps it
    // for the threads it applies to): not for every thread from now on.
    *why = FallbackReason::kSandbox;
    return EPERM;
  }
  if (tier == Tier::kSecret && secret_refused_) {
    *why = secret_refusal_;
    return secret_refusal_errno_;
  }
  // Before the budget: reading it calls capget, which a strict filter may kill on too.
  if (tier == Tier::kLocked && !may_call(linux_facts::ProbeCall::kMlock)) {
    *why = FallbackReason::kSandbox;
    return EPERM;
  }
  uint32_t pages = flexible ? kMaxChunkPages : min_pages;
  if (tier != Tier::kUnlocked) {
    size_t budget = os::memlock_budget();
    if (!memlock_budget_read_) {
      memlock_budget_read_ = true;
      first_memlock_budget_ = budget;
    }
    size_t budget_pages = budget / os::kPageSize;
    if (flexible && budget_pages < pages) pages = static_cast<uint32_t>(budget_pages);
    if (budget_pages < min_pages || pages < min_pages) {
      *why = FallbackReason::kMemlock;
      return EAGAIN;
    }
  }
  void *at = reinterpret_cast<void *>(addr);
  size_t len = size_t{pages} * os::kPageSize;
  int err = 0;
  if (tier == Tier::kSecret) {
    err = os::map_secret_fixed(at, len);
    *why = secret_refusal(err);
    if (err == ENOSYS || err == EPERM || err == EACCES) {
      secret_refused_ = true;
      secret_refusal_ = *why;
      secret_refusal_errno_ = err;
    }
  } else {
    err = os::map_anon_fixed(at, len);
    *why = FallbackReason::kOther;
  }
  // The first pages are faulted in now, so that a refusal to charge them
  // (EFAULT from kernels that charge memlock at first touch, or mlock's
  // EAGAIN/ENOMEM) sends this chunk to the next tier.
  uint32_t first_touch =
      flexible ? std::min(pages, min_pages > kTouchBatchPages ? min_pages : kTouchBatchPages) : pages;
  if (err == 0) {
    err = fault_in(tier, at, size_t{first_touch} * os::kPageSize);
    if (err != 0)
      *why = tier == Tier::kLocked && refused_by_sandbox(linux_facts::ProbeCall::kMlock) ? FallbackReason::kSandbox
                                                                                         : FallbackReason::kMemlock;
  }
  if (err != 0) {
    // A failed MAP_FIXED may have dropped the reservation: reserved again at
    // once, before another thread can map there (at vm.max_map_count, where
    // every mmap fails, it stays as it is; the pool's failure path tries
    // again).
    (void)os::release_to_reserve(at, len);
    return err;
  }
  out->tier = tier;
  out->pages = pages;
  out->touched = first_touch;
  return 0;
}

FallbackReason TierMapper::secret_refusal(int err) {
  switch (err) {
  case ENOSYS: return FallbackReason::kNoKernelSupport;
  case EPERM:
  case EACCES: return FallbackReason::kRefused;
  case EAGAIN: return FallbackReason::kMemlock;
  default: return FallbackReason::kOther;
  }
}

bool TierMapper::may_degrade() const { return policy::may_degrade(*config_); }

bool TierMapper::refused_by_sandbox(linux_facts::ProbeCall call) const {
  const CallCheck &check = calls_[static_cast<int>(call)];
  return check.checked && !check.safe;
}

bool TierMapper::map_chunk(uintptr_t addr, uint32_t min_pages, bool flexible, Mapped *out) {
  skipped_for_sandbox_ = false;
  Tier top = policy::top_tier(*config_);
  FallbackReason first_why = FallbackReason::kOther;
  int first_err = 0;
  const char *first_why_text = nullptr; // a sandbox refusal's, before the next tier's check replaces it
  bool first_why_for_now = false;
  Tier last = top; // the last tier tried, and why it refused
  FallbackReason last_why = FallbackReason::kOther;
  int last_err = 0;
  for (int t = static_cast<int>(top); t < kNumTiers; ++t) {
    Tier tier = static_cast<Tier>(t);
    if (tier != top && !may_degrade()) break;
    FallbackReason why = FallbackReason::kOther;
    int err = map_one(tier, addr, min_pages, flexible, out, &why);
    if (err == 0) {
      if (tier != top) {
        counters_.fallbacks[static_cast<int>(first_why)]++;
        report_fallback(tier, first_why, first_err, first_why_text, first_why_for_now);
      }
      return true;
    }
    if (why == FallbackReason::kMemlock && defer_memlock_) {
      memlock_deferred_ = true;
      errno = ENOMEM;
      return false;
    }
    if (tier == top) {
      first_why = why;
      first_err = err;
      first_why_text = sandbox_why_;
      first_why_for_now = sandbox_why_for_now_;
    } else if (why == FallbackReason::kSandbox) {
      skipped_for_sandbox_ = true;
    }
    last = tier;
    last_why = why;
    last_err = err;
  }
  counters_.failed_chunks++;
  report_failure(first_why, first_err, first_why_text, first_why_for_now,
                 last != top ? static_cast<int>(last) : kNumTiers, last_why, last_err);
  errno = ENOMEM;
  return false;
}

void TierMapper::report_fallback(Tier to, FallbackReason why, int err, const char *why_text, bool why_for_now) {
  if (reported_[static_cast<int>(to)]) return;
  reported_[static_cast<int>(to)] = true;
  diag::Line line;
  line.add(tier_name(policy::top_tier(*config_))).add(" unavailable (");
  describe(line, why, err, why_text, why_for_now);
  line.add("); falling back to ").add(tier_description(to));
  if (skipped_for_sandbox_ && to == Tier::kUnlocked && sandbox_why_ != nullptr)
    line.add(" (mlock not made: ").add(sandbox_why_for_now_ ? "EMFILE: " : "SIGSYS: ").add(sandbox_why_).add(")");
  if (policy::undumpable_once_in(*config_, to)) {
    if (!undumpable_) undumpable_ = make_undumpable(&line);
    if (undumpable_)
      line.add(", and the process is made non-dumpable so that its user cannot read it (SECMEM_NODUMP=fallback)");
  }
  line.add(" (set SECMEM_ON_EXHAUSTION=fail to refuse instead)");
  line.emit();
}

void TierMapper::report_failure(FallbackReason why, int err, const char *why_text, bool why_for_now, int last,
                                FallbackReason last_why, int last_err) {
  if (reported_failure_) return;
  reported_failure_ = true;
  diag::Line line;
  line.add("out of secret memory (");
  describe(line, why, err, why_text, why_for_now);
  // The last tier's own reason (a fallback tier refused for another: the
  // mapping count, where the first said the memlock budget).
  if (last < kNumTiers) {
    line.add("; ").add(tier_description(static_cast<Tier>(last))).add(": ");
    describe(line, last_why, last_err, nullptr, false);
  }
  line.add("); allocations return NULL with ENOMEM");
  if (config_->backend == Backend::kMemfdSecret)
    line.add(" (SECMEM_BACKEND=memfd_secret never falls back)");
  else if (config_->on_exhaustion == OnExhaustion::kFail)
    line.add(" (SECMEM_ON_EXHAUSTION=fail)");
  line.emit();
}

// "EPERM: refused, as by a seccomp filter", or "SIGSYS: a seccomp filter here kills on it".
void TierMapper::describe(diag::Line &line, FallbackReason why, int err, const char *why_text, bool why_for_now) const {
  if (why_text == nullptr) {
    why_text = sandbox_why_;
    why_for_now = sandbox_why_for_now_;
  }
  if (why == FallbackReason::kSandbox)
    line.add(why_for_now ? "EMFILE: " : "SIGSYS: ")
        .add(why_text != nullptr ? why_text : "a seccomp filter may kill on it");
  else if (err == EFBIG)
    line.add("EFBIG: RLIMIT_FSIZE is below the size of a memfd_secret file");
  else if (err == EMFILE || err == ENFILE)
    line.add(linux_facts::errno_name(err)).add(": the descriptor table is full");
  else if (err == ENOMEM && why == FallbackReason::kMemlock) // mlock's: either, and no cheap way to tell
    line.add("ENOMEM: RLIMIT_MEMLOCK budget spent, or vm.max_map_count reached");
  else if (err == ENOMEM && why == FallbackReason::kOther)
    line.add("ENOMEM: the kernel refused the mapping (vm.max_map_count reached?)");
  else
    line.add(linux_facts::errno_name(err)).add(": ").add(reason_text(why));
}

// Outside memfd_secret the same user can read secrets through ptrace and
// /proc/PID/mem: SECMEM_NODUMP=fallback makes the process non-dumpable.
SECMEM_FORK_CHILD_TEXT void TierMapper::note_tier(Tier tier) {
  // Once a chunk landed outside memfd_secret, tried at every new chunk until
  // it is made (its refusal said once): the descriptor table may have room
  // again by then, whatever the new chunk's tier.
  weak_tier_seen_ = weak_tier_seen_ || policy::undumpable_once_in(*config_, tier);
  if (!weak_tier_seen_ || undumpable_) return;
  undumpable_ = make_undumpable();
}

bool TierMapper::make_undumpable(diag::Line *into) {
  bool allowed = may_call(linux_facts::ProbeCall::kDumpable);
  int err = allowed ? os::make_undumpable() : 0;
  if (allowed && err == 0) {
    // (A fallback's line says it itself.)
    if (undumpable_refusal_said_ && into == nullptr)
      diag::Line().add("SECMEM_NODUMP: the process is non-dumpable now").emit();
    return true;
  }
  // Tried again at the next chunk in a weaker tier (a descriptor may be
  // free by then), said once.
  if (undumpable_refusal_said_) return false;
  undumpable_refusal_said_ = true;
  diag::Line own;
  diag::Line &line = into != nullptr ? *into : own;
  line.add(into != nullptr ? ", but the process could not be made non-dumpable (SECMEM_NODUMP=fallback: "
                           : "SECMEM_NODUMP: ");
  line.add("prctl(PR_SET_DUMPABLE, 0) ").add(allowed ? "failed (" : "not made (");
  if (allowed)
    line.err(err);
  else
    describe(line, FallbackReason::kSandbox, EPERM);
  line.add(into != nullptr ? ")), so its user can read it" : ")");
  if (into == nullptr) line.emit();
  return false;
}

} // namespace secmem

/* The contract between libsecmem and an interposer such as the preload shim
 * (not installed; not part of the public API).
 *
 * - secmem_tag_depth_tls: this thread's tag depth (secmem_tag_begin/end),
 *   exported as an initial-exec TLS variable so that the shim's malloc reads
 *   it with one load, without a call. The depth is its low 31 bits
 *   (SECMEM_INTERPOSE_TAG_DEPTH); the top bit (SECMEM_INTERPOSE_TAG_PENDING)
 *   is the interposer's own, which scopes leave alone: set while it waits
 *   for one allocation of a known size (the shim: the buffer a program
 *   allocates for a private key's DER encoding, whose length it has just
 *   asked i2d_PrivateKey for), so that malloc's fast path, which sees the
 *   word non-zero, takes the routed one.
 * - secmem_reserved_range (public, secmem.h): every secret pointer lies in
 *   that range once the heap has started; its end never changes, and it
 *   grows downwards before it returns a pointer in the new part.
 * - Children reaped (the shim's wait, waitpid, wait3, wait4 and waitid): a
 *   fork child maps a staging file of its parent's until it is gone, and
 *   only the kernel can say when it is. An interposer that sees the program
 *   reap its children says so, and the heap gives their files to the next
 *   fork without asking the kernel itself (a /proc read and waitid per
 *   fork). secmem_interpose_watch_reaping: the interposer does (once, at
 *   start-up). secmem_interpose_forks_done, read before the wait call, and
 *   secmem_interpose_child_reaped(pid, that count), after it reaped pid: a
 *   file is given again only to a child forked before the wait began, so a
 *   pid used again by a later child frees nothing. All three are
 *   async-signal-safe (programs reap in SIGCHLD handlers).
 * - secmem_interpose_process_mark(ask_kernel): which process this is, as the
 *   heap's fork handlers follow it (its fork generation and pid, which the
 *   child handler writes on the heap's page), or with ask_kernel, the
 *   generation and the pid getpid gives the caller (a vfork child's is not
 *   its parent's, but for one in another pid namespace under the same
 *   number); 0 when the fork handlers are not registered.
 *   Async-signal-safe. */
#ifndef SECMEM_INTERNAL_INTERPOSE_H
#define SECMEM_INTERNAL_INTERPOSE_H

#ifdef __cplusplus
extern "C" {
#endif

extern __attribute__((tls_model("initial-exec"))) __thread unsigned secmem_tag_depth_tls;
#define SECMEM_INTERPOSE_TAG_PENDING 0x80000000u
#define SECMEM_INTERPOSE_TAG_DEPTH 0x7fffffffu

void secmem_interpose_watch_reaping(void);
unsigned long long secmem_interpose_forks_done(void);
void secmem_interpose_child_reaped(int pid, unsigned long long forks_done_before);
unsigned long long secmem_interpose_process_mark(int ask_kernel);

#ifdef __cplusplus
}
#endif

#endif /* SECMEM_INTERNAL_INTERPOSE_H */

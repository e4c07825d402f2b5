/* The contract between libsecmem and an interposer such as the preload shim
 * (not installed; not part of the public API).
 *
 * - secmem_tag_depth_tls: this thread's tag depth (secmem_tag_begin/end),
 *   exported as an initial-exec TLS variable so that the shim's malloc reads
 *   it with one load, without a call.
 * - secmem_reserved_range (public, secmem.h): every secret pointer lies in
 *   that range once the heap has started; its end never changes, and it
 *   grows downwards before it returns a pointer in the new part. */
#ifndef SECMEM_INTERNAL_INTERPOSE_H
#define SECMEM_INTERNAL_INTERPOSE_H

#ifdef __cplusplus
extern "C" {
#endif

extern __attribute__((tls_model("initial-exec"))) __thread unsigned secmem_tag_depth_tls;

#ifdef __cplusplus
}
#endif

#endif /* SECMEM_INTERNAL_INTERPOSE_H */

// alloc_bench's peers (peers.h); jemalloc_bench has jemalloc_peer.cpp instead.
#include "peers.h"
#include "throughput.h"

namespace bench {
namespace {

// In the order each size's throughput benchmarks run (throughput.cpp): secmem and the figure it is
// held to first, back to back.
const bool registered = register_peer<Secmem>("Secmem") && register_peer<GlibcBzero>("GlibcBzero") &&
                        register_peer<OpenSSLSecureHeap>("OpenSSLSecureHeap") && register_peer<Sodium>("Sodium") &&
                        register_peer<NaiveMemfd>("NaiveMemfd");

} // namespace
} // namespace bench

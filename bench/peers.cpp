// alloc_bench's peers (peers.h); jemalloc_bench has jemalloc_peer.cpp instead.
#include "peers.h"
#include "throughput.h"

namespace bench {
namespace {

const bool registered = register_peer<GlibcBzero>("GlibcBzero") &&
                        register_peer<OpenSSLSecureHeap>("OpenSSLSecureHeap") && register_peer<Sodium>("Sodium") &&
                        register_peer<NaiveMemfd>("NaiveMemfd") && register_peer<Secmem>("Secmem");

} // namespace
} // namespace bench

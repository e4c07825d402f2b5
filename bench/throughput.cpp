// Registration of the throughput benchmarks (throughput.h), under the names bench/run reads:
// "Lifo<Peer>/SIZE/real_time/threads:N" (N = 1, 2; and 8 for secmem).
#include "throughput.h"

#include <string>

namespace bench {

// Google Benchmark runs benchmarks in the order they were registered. This machine's noise comes in
// spells of seconds, so each pattern and size runs every peer and thread count back to back (each
// peer's sizes in a row put a minute or more between two peers' runs of one size, and a spell on
// one side of their ratio), the peers in the order they were registered (secmem first, glibc
// next: peers.cpp). secmem also on 8 threads: more threads than the machine's cores must not collapse
// its throughput. With one_thread_only (--single_threaded_process) only the one-thread runs exist: a
// filter that would select another runs nothing instead of making the process threaded from there on.
void register_throughput_benchmarks(bool one_thread_only) {
  for (bool lifo : {true, false})
    for (int size : {16, 32, 256, 1024, 4096, 16384, 65536})
      for (const Peer &peer : peers()) {
        auto *b = benchmark::RegisterBenchmark((std::string(lifo ? "Lifo<" : "RandomBatch<") + peer.name + ">").c_str(),
                                               lifo ? peer.lifo : peer.batch);
        b->Arg(size)->Threads(1)->UseRealTime();
        if (one_thread_only) continue;
        b->Threads(2);
        if (std::string(peer.name) == "Secmem") b->Threads(8);
      }
}

} // namespace bench

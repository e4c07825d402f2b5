// Registration of the throughput benchmarks (throughput.h), under the names bench/run reads:
// "Lifo<Peer>/SIZE/real_time/threads:N" (N = 1, 2; and 8 for secmem).
#include "throughput.h"

#include <string>

namespace bench {

namespace {

void sizes(benchmark::internal::Benchmark *b) {
  for (int size : {16, 32, 256, 1024, 4096, 16384, 65536}) b->Arg(size);
  b->Threads(1)->Threads(2)->UseRealTime();
}

} // namespace

// secmem also on 8 threads: more threads than the machine's cores must not collapse its throughput.
void register_throughput(const char *name, void (*lifo)(benchmark::State &), void (*batch)(benchmark::State &)) {
  bool oversubscribed = std::string(name) == "Secmem";
  for (auto *b : {benchmark::RegisterBenchmark(("Lifo<" + std::string(name) + ">").c_str(), lifo),
                  benchmark::RegisterBenchmark(("RandomBatch<" + std::string(name) + ">").c_str(), batch)}) {
    b->Apply(sizes);
    if (oversubscribed) b->Threads(8);
  }
}

} // namespace bench

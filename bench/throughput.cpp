// Registration of the throughput benchmarks (throughput.h), under the names bench/run reads:
// "Lifo<Peer>/SIZE/real_time/threads:N".
#include "throughput.h"

#include <string>

namespace bench {

namespace {

void sizes(benchmark::internal::Benchmark *b) {
  for (int size : {16, 32, 256, 1024, 4096, 65536}) b->Arg(size);
  b->Threads(1)->Threads(2)->UseRealTime();
}

} // namespace

void register_throughput(const char *name, void (*lifo)(benchmark::State &), void (*batch)(benchmark::State &)) {
  benchmark::RegisterBenchmark(("Lifo<" + std::string(name) + ">").c_str(), lifo)->Apply(sizes);
  benchmark::RegisterBenchmark(("RandomBatch<" + std::string(name) + ">").c_str(), batch)->Apply(sizes);
}

} // namespace bench

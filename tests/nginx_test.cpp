// nginx with TLS and 4 worker processes, plain and under the preload shim,
// driven by wrk on loopback: no failed request, the same responses both
// ways, no worker lost, and under the shim every worker makes new secrets
// of its own after the fork (SECMEM_REPORT lines).
#include <gtest/gtest.h>

#include <csignal>
#include <dirent.h>
#include <fstream>
#include <map>
#include <netinet/in.h>
#include <regex>
#include <set>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "test_support.h"

using namespace secmem::test;

namespace {

const std::string kShim = SECMEM_PRELOAD_PATH;
const std::string kFetch = SECMEM_SOURCE_DIR "/tests/https_fetch.py";
const std::vector<std::string> kPaths = {"/index.html", "/small.bin", "/large.bin", "/missing"};

int free_port() {
  sockaddr_in addr{};
  close(bound_loopback_socket(&addr));
  return ntohs(addr.sin_port);
}

bool accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

std::set<int> children_of(int parent) {
  std::set<int> pids;
  DIR *proc = opendir("/proc");
  while (dirent *entry = proc != nullptr ? readdir(proc) : nullptr) {
    int pid = atoi(entry->d_name);
    if (pid <= 0) continue;
    std::string text = read_file("/proc/" + std::to_string(pid) + "/stat");
    size_t close_paren = text.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(text.substr(close_paren + 2));
    std::string state;
    int ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) pids.insert(pid);
  }
  if (proc != nullptr) closedir(proc);
  return pids;
}

bool has_secretmem(int pid) {
  for (const Mapping &m : read_mappings(pid))
    if (m.secret()) return true;
  return false;
}

class Nginx : public testing::Test {
protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/secmem-nginx-XXXXXX";
    dir_ = mkdtemp(pattern);
    ASSERT_EQ(system(("mkdir -p " + dir_ + "/www && cd " + dir_ +
                      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem"
                      " -out cert.pem -subj /CN=localhost -days 1 2>/dev/null"
                      " && echo '<html>secmem</html>' > www/index.html"
                      " && head -c 100000 /dev/urandom > www/small.bin && head -c 1048576 /dev/urandom > www/large.bin")
                         .c_str()),
              0);
  }
  static void TearDownTestSuite() { (void)!system(("rm -rf " + dir_).c_str()); }

  struct RunResult {
    std::string fetched;   // https_fetch.py's lines
    std::string wrk_close; // wrk with a new connection (TLS handshake) per request
    std::string wrk_keep;  // wrk on kept-alive connections
    std::set<int> workers_before, workers_after;
    std::vector<int> workers_with_secretmem;
    bool master_has_secretmem = false;
    std::string error_log;
    int status = -1;
  };

  static RunResult serve(bool shim) {
    RunResult r;
    int port = free_port();
    std::string conf = dir_ + "/nginx.conf", log = dir_ + "/error.log";
    // nginx empties the workers' environment but for what `env` names.
    std::ofstream(conf) << "worker_processes 4;\n"
                           "env SECMEM_REPORT;\n"
                           "user root;\n"
                           "pid "
                        << dir_
                        << "/nginx.pid;\n"
                           "error_log "
                        << log
                        << " warn;\n"
                           "events { worker_connections 512; }\n"
                           "http {\n"
                           "  access_log off;\n"
                           "  client_body_temp_path "
                        << dir_
                        << "/body;\n"
                           "  proxy_temp_path "
                        << dir_
                        << "/proxy;\n"
                           "  fastcgi_temp_path "
                        << dir_
                        << "/fastcgi;\n"
                           "  uwsgi_temp_path "
                        << dir_
                        << "/uwsgi;\n"
                           "  scgi_temp_path "
                        << dir_
                        << "/scgi;\n"
                           "  server {\n"
                           "    listen 127.0.0.1:"
                        << port
                        << " ssl;\n"
                           "    ssl_certificate "
                        << dir_
                        << "/cert.pem;\n"
                           "    ssl_certificate_key "
                        << dir_
                        << "/key.pem;\n"
                           "    ssl_session_cache off;\n"
                           "    ssl_session_tickets off;\n"
                           "    root "
                        << dir_
                        << "/www;\n"
                           "  }\n"
                           "}\n";
    unlink(log.c_str());
    std::string report = dir_ + "/report";
    unlink(report.c_str());
    std::vector<std::string> env;
    if (shim) env = {"LD_PRELOAD=" + kShim, "SECMEM_REPORT=" + report};
    Child master = start({"nginx", "-p", dir_, "-c", conf, "-e", log, "-g", "daemon off;"}, env);
    for (int i = 0; i < 200 && !accepts(port); ++i) usleep(25000);
    for (int i = 0; i < 200 && children_of(master.pid).size() < 4; ++i) usleep(25000);
    r.workers_before = children_of(master.pid);
    r.master_has_secretmem = has_secretmem(master.pid);
    for (int pid : r.workers_before)
      if (has_secretmem(pid)) r.workers_with_secretmem.push_back(pid);
    std::string base = "https://127.0.0.1:" + std::to_string(port);
    r.wrk_close = run({"wrk", "-t2", "-c8", "-d2s", "-H", "Connection: close", base + "/index.html"}).out;
    r.wrk_keep = run({"wrk", "-t2", "-c8", "-d2s", base + "/large.bin"}).out;
    std::vector<std::string> fetch = {"python3", kFetch, std::to_string(port)};
    fetch.insert(fetch.end(), kPaths.begin(), kPaths.end());
    r.fetched = run(fetch).out;
    r.workers_after = children_of(master.pid);
    kill(master.pid, SIGQUIT); // graceful: workers finish and exit (and write their reports)
    Result done = finish(master);
    r.status = done.status;
    r.error_log = read_file(log);
    report_ = shim ? read_file(report) : "";
    return r;
  }

  // "N requests in" from wrk's output.
  static long requests(const std::string &wrk) {
    std::smatch m;
    return std::regex_search(wrk, m, std::regex(R"((\d+) requests in)")) ? std::stol(m[1]) : -1;
  }

  static void expect_clean(const RunResult &r, const char *what) {
    EXPECT_EQ(r.status, 0) << what << ": nginx's exit status";
    EXPECT_EQ(r.workers_before.size(), 4u) << what;
    EXPECT_EQ(r.workers_after, r.workers_before) << what << ": a worker was replaced (crashed)";
    for (const std::string *wrk : {&r.wrk_close, &r.wrk_keep}) {
      EXPECT_GT(requests(*wrk), 50) << what << ":\n" << *wrk;
      EXPECT_EQ(wrk->find("Socket errors"), std::string::npos) << what << ":\n" << *wrk;
      EXPECT_EQ(wrk->find("Non-2xx"), std::string::npos) << what << ":\n" << *wrk;
    }
    EXPECT_EQ(r.error_log.find("exited on signal"), std::string::npos) << what << ":\n" << r.error_log;
    EXPECT_EQ(r.error_log.find("[alert]"), std::string::npos) << what << ":\n" << r.error_log;
    EXPECT_EQ(r.error_log.find("[emerg]"), std::string::npos) << what << ":\n" << r.error_log;
  }

  static inline std::string dir_;
  static inline std::string report_;
};

} // namespace

TEST_F(Nginx, FourTlsWorkersUnderTheShimServeWhatPlainNginxServes) {
  SECMEM_REQUIRE_SECRETMEM();
  RunResult plain = serve(false);
  RunResult shimmed = serve(true);
  std::printf("wrk, new TLS connection per request: plain %ld, under the shim %ld requests in 2 s\n",
              requests(plain.wrk_close), requests(shimmed.wrk_close));
  std::printf("wrk, 1 MiB file on kept-alive connections: plain %ld, under the shim %ld requests in 2 s\n",
              requests(plain.wrk_keep), requests(shimmed.wrk_keep));
  expect_clean(plain, "plain");
  expect_clean(shimmed, "under the shim");
  // The same responses (status, length, body hash) for every path.
  EXPECT_EQ(std::count(plain.fetched.begin(), plain.fetched.end(), '\n'), static_cast<long>(kPaths.size()))
      << plain.fetched;
  EXPECT_NE(plain.fetched.find("/large.bin 200 1048576 "), std::string::npos) << plain.fetched;
  EXPECT_NE(plain.fetched.find("/missing 404 "), std::string::npos) << plain.fetched;
  EXPECT_EQ(shimmed.fetched, plain.fetched);
  // Keys in secret memory in the master and in every worker; none in the plain run.
  EXPECT_TRUE(shimmed.master_has_secretmem);
  EXPECT_EQ(shimmed.workers_with_secretmem.size(), 4u);
  EXPECT_FALSE(plain.master_has_secretmem);
  // Each worker made secret allocations of its own after the fork: its count
  // (inherited from the master, plus its own) exceeds the master's.
  std::map<int, long> openssl_allocations;
  std::regex line(R"(secmem report: pid (\d+) \(nginx[^)]*\): backend memfd_secret; secret allocations openssl (\d+))");
  for (std::sregex_iterator it(report_.begin(), report_.end(), line), end; it != end; ++it)
    openssl_allocations[std::stoi((*it)[1])] = std::stol((*it)[2]);
  ASSERT_EQ(openssl_allocations.size(), 5u) << report_;
  long master = openssl_allocations.begin()->second; // the master has the lowest pid
  std::printf("secret allocations through OpenSSL's secure heap: master %ld; workers", master);
  for (int pid : shimmed.workers_before) std::printf(" %ld", openssl_allocations[pid]);
  std::printf("\n");
  for (int pid : shimmed.workers_before) {
    ASSERT_TRUE(openssl_allocations.count(pid)) << pid << "\n" << report_;
    EXPECT_GT(openssl_allocations[pid], master) << "worker " << pid << "\n" << report_;
  }
}

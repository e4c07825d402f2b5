// Real servers under the shim: stunnel, socat, HAProxy (2 threads, and
// master-worker with a reload), sshd (a login and a command),
// PostgreSQL (ssl=on, a backend per connection) and Apache (prefork and event,
// and a graceful restart to a new key; an encrypted key), each serving TLS with an
// RSA-2048, an EC P-256 and an Ed25519 key, run
// plainly and under the shim on 127.0.0.1. Each must answer the same way both
// times; then every process of the server (its children too) is scanned for
// every private component of its key with `secmem scan`'s scanner: none under
// the shim, where each key holder has a secretmem mapping; some without it,
// so that the scan is known to work.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "keys.h"
#include "proc.h"
#include "test_support.h"

using namespace secmem::test;
using secmem::tool::describe_copies;
using secmem::tool::key_patterns;
using secmem::tool::load_key_material;
using secmem::tool::scan;
using secmem::tool::ScanResult;

namespace {

const std::string kShim = SECMEM_PRELOAD_PATH;
const std::string kPgBin = "/usr/lib/postgresql/15/bin";

// pid and its descendants, from /proc/*/stat.
std::vector<int> process_tree(int pid) {
  std::vector<std::pair<int, int>> parents; // (pid, ppid)
  if (DIR *proc = opendir("/proc")) {
    while (dirent *entry = readdir(proc)) {
      int child = atoi(entry->d_name);
      if (child <= 0) continue;
      std::string stat = read_file("/proc/" + std::to_string(child) + "/stat");
      size_t close_paren = stat.rfind(')');
      if (close_paren == std::string::npos) continue;
      int ppid = 0;
      char state = 0;
      if (sscanf(stat.c_str() + close_paren + 1, " %c %d", &state, &ppid) == 2) parents.emplace_back(child, ppid);
    }
    closedir(proc);
  }
  std::vector<int> tree = {pid};
  for (size_t i = 0; i < tree.size(); ++i)
    for (const auto &[child, ppid] : parents)
      if (ppid == tree[i]) tree.push_back(child);
  return tree;
}

class Servers : public testing::TestWithParam<const char *> {
protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/secmem-servers-XXXXXX";
    dir_ = mkdtemp(pattern);
    chmod(dir_.c_str(), 0755); // PostgreSQL runs as its own user
    for (const std::string type : {"RSA", "EC", "Ed25519"}) {
      std::string key = dir_ + "/" + type + ".pem", cert = dir_ + "/" + type + ".crt";
      ASSERT_TRUE(make_key_and_cert(type, key, cert));
      ASSERT_EQ(system(("cat " + cert + " " + key + " > " + dir_ + "/" + type + ".combined").c_str()), 0); // HAProxy's
    }
  }
  static void TearDownTestSuite() { (void)!system(("rm -rf " + dir_).c_str()); }
  static std::string key() { return dir_ + "/" + GetParam() + ".pem"; }
  static std::string cert() { return dir_ + "/" + GetParam() + ".crt"; }
  static std::vector<std::string> env(bool shim) {
    return shim ? std::vector<std::string>{"LD_PRELOAD=" + kShim} : std::vector<std::string>{};
  }

  // What a TLS client gets back after sending line (openssl s_client, which
  // leaves one second after its input ends).
  static std::string exchange(const std::string &port, const std::string &line) {
    Result client = run({"sh", "-c",
                         "(printf '" + line + "'; sleep 1) | timeout 20 openssl s_client -connect 127.0.0.1:" + port +
                             " -CAfile " + cert() + " -servername localhost -verify_return_error -quiet -no_ign_eof"});
    EXPECT_EQ(client.status, 0) << client.err;
    return client.out;
  }

  // Scans every process of the server's tree; under the shim no component may
  // be readable and each process must have a secretmem mapping. Returns the
  // copies found (every process, every component).
  // core_only: the key's core (RSA d, the EC scalar, the Ed25519 key) must be
  // unreadable, not every component (another allocator first: README, limits).
  static int scan_tree(int pid, bool shim, const std::string &server, const std::string &key_file = key(),
                       const std::string &only = "", bool core_only = false) {
    int total = 0;
    std::vector<int> tree = process_tree(pid);
    for (int member : tree) {
      if (secmem::tool::process_name(member) == "runuser") continue; // PostgreSQL's: root's, before the preload
      if (!only.empty() && secmem::tool::process_name(member) != only) continue;
      ScanResult result;
      try {
        result = scan(member, key_patterns(load_key_material(key_file)));
      } catch (const secmem::tool::ToolError &error) {
        // A child that served a connection may leave while it is read: that is
        // fine; any other process must be scanned.
        EXPECT_FALSE(secmem::tool::process_exists(member) && member == pid) << error.message;
        continue;
      }
      std::string name = secmem::tool::process_name(member);
      // Every live process has its executable mapped: no region at all is a
      // process that is leaving (its memory already gone), such as the backend
      // of a session that just ended.
      if (result.regions_read == 0 && result.unreadable_secret.empty() && result.unreadable_other.empty()) {
        std::printf("| %s | %s | %s | pid %d (%s) | left during the scan |\n", server.c_str(), GetParam(),
                    shim ? "shim" : "plain", member, name.c_str());
        continue;
      }
      total += result.total();
      std::printf("| %s | %s | %s | pid %d (%s) | %d (%s) |\n", server.c_str(), GetParam(), shim ? "shim" : "plain",
                  member, name.c_str(), result.total(), describe_copies(result).c_str());
      if (!shim) continue;
      for (const std::string &component : result.components)
        if (!core_only || component == "RSA d" || component == "EC private scalar" ||
            component == "Ed25519 private key") {
          EXPECT_EQ(result.of(component), 0) << server << " pid " << member << " (" << name << "), " << component
                                             << ": " << describe_copies(result, component);
        }
      EXPECT_GE(result.unreadable_secret.size(), 1u)
          << server << " pid " << member << " (" << name << ") has no secretmem mapping";
    }
    return total;
  }

  static void check_echo_server(const std::string &name,
                                const std::function<std::vector<std::string>(const std::string &)> &argv_for);

  static inline std::string dir_;
};

// A server process, stopped (SIGTERM, then SIGKILL) however the test ends.
struct Running {
  Child child;
  explicit Running(Child started) : child(started) {}
  ~Running() {
    std::vector<int> tree = process_tree(child.pid);
    kill(child.pid, SIGTERM);
    for (int i = 0; i < 100 && waitpid(child.pid, nullptr, WNOHANG) == 0; ++i) usleep(50000);
    for (int member : tree) kill(member, SIGKILL); // children that outlive it would hold its pipes open
    finish(child);
  }
  Running(const Running &) = delete;
  Running &operator=(const Running &) = delete;
};

} // namespace

// An echo server over TLS started by argv_for(port), plainly then under the
// shim: it echoes twice, then its process tree is scanned.
void Servers::check_echo_server(const std::string &name,
                                const std::function<std::vector<std::string>(const std::string &)> &argv_for) {
  int plain = 0;
  for (bool shim : {false, true}) {
    sockaddr_in addr{};
    std::string port = free_loopback_port(&addr);
    ASSERT_NE(port, "");
    Running server(start(argv_for(port), env(shim)));
    ASSERT_TRUE(wait_listening(addr, 15)) << name << " did not listen";
    for (int i = 0; i < 2; ++i) EXPECT_EQ(exchange(port, "ping\\n"), "ping\n");
    int found = scan_tree(server.child.pid, shim, name);
    if (!shim) plain = found;
  }
  EXPECT_GT(plain, 0) << "the scan finds the key where nothing protects it";
}

// stunnel: TLS in front of /bin/cat (exec= forks a child per connection, which execs).
TEST_P(Servers, Stunnel) {
  SECMEM_REQUIRE_SECRETMEM();
  check_echo_server("stunnel", [](const std::string &port) {
    std::string conf = dir_ + "/stunnel-" + GetParam() + ".conf";
    std::ofstream(conf) << "foreground = yes\npid =\ndebug = 0\n[echo]\naccept = 127.0.0.1:" << port
                        << "\ncert = " << cert() << "\nkey = " << key() << "\nexec = /bin/cat\n";
    return std::vector<std::string>{"stunnel4", conf};
  });
}

// socat: a TLS listener that forks a child per connection, in front of cat.
TEST_P(Servers, Socat) {
  SECMEM_REQUIRE_SECRETMEM();
  check_echo_server("socat", [](const std::string &port) {
    return std::vector<std::string>{
        "socat", "OPENSSL-LISTEN:" + port + ",bind=127.0.0.1,reuseaddr,fork,verify=0,cert=" + cert() + ",key=" + key(),
        "EXEC:/bin/cat"};
  });
}

// HAProxy with 2 threads, answering every HTTPS request itself; then in
// master-worker mode (-W) with a reload (SIGUSR2: the master executes itself
// again and starts a new worker, the old one leaves): every process, the
// new worker and the master too, is scanned after the reload.
TEST_P(Servers, Haproxy) {
  SECMEM_REQUIRE_SECRETMEM();
  for (bool master_worker : {false, true}) {
    int plain = 0;
    for (bool shim : {false, true}) {
      SCOPED_TRACE(std::string(master_worker ? "master-worker" : "2 threads") + (shim ? " under the shim" : " plain"));
      sockaddr_in addr{};
      std::string port = free_loopback_port(&addr), conf = dir_ + "/haproxy-" + GetParam() + ".cfg";
      std::ofstream(conf) << "global\n  nbthread 2\n  hard-stop-after 3s\ndefaults\n  mode http\n"
                          << "  timeout connect 5s\n  timeout client 5s\n  timeout server 5s\nfrontend tls\n"
                          << "  bind 127.0.0.1:" << port << " ssl crt " << dir_ << "/" << GetParam() << ".combined\n"
                          << "  http-request return status 200 content-type text/plain string ok\n";
      std::vector<std::string> argv = {"haproxy", "-db", "-f", conf};
      if (master_worker) argv.insert(argv.begin() + 1, "-W");
      Running server(start(argv, env(shim)));
      ASSERT_TRUE(wait_listening(addr, 15)) << "haproxy did not listen";
      auto fetch_ok = [&] {
        Result fetch = run({"curl", "-s", "--max-time", "20", "--cacert", cert(), "--resolve",
                            "localhost:" + port + ":127.0.0.1", "https://localhost:" + port + "/"});
        EXPECT_EQ(fetch.status, 0) << fetch.err;
        EXPECT_EQ(fetch.out, "ok");
        return fetch.status == 0 && fetch.out == "ok";
      };
      for (int i = 0; i < 3; ++i) fetch_ok();
      if (master_worker) {
        std::vector<int> before = process_tree(server.child.pid);
        ASSERT_GE(before.size(), 2u) << "no worker under the master";
        kill(server.child.pid, SIGUSR2);
        bool reloaded = false; // a worker the master did not have before
        for (int i = 0; i < 100 && !reloaded; ++i) {
          usleep(100000);
          for (int member : process_tree(server.child.pid))
            reloaded = reloaded ||
                       (member != server.child.pid && std::find(before.begin(), before.end(), member) == before.end());
        }
        ASSERT_TRUE(reloaded) << "no new worker after SIGUSR2";
        usleep(500000);
        for (int i = 0; i < 3; ++i) fetch_ok();
      }
      int found = scan_tree(server.child.pid, shim, master_worker ? "haproxy -W, reloaded" : "haproxy");
      if (!shim) plain = found;
    }
    EXPECT_GT(plain, 0) << "the scan finds the key where nothing protects it";
  }
}

// HAProxy (2 threads) with jemalloc or tcmalloc preloaded too, in either
// order. The shim first: untagged allocations go to the other allocator and
// no component is readable. The other allocator first: it serves plain
// malloc, the shim's tags are off (it says so), and OpenSSL's secure heap
// still holds the key's core (RSA d, the EC scalar, the Ed25519 key); RSA's
// p and q in Montgomery contexts are a known gap there (README, limits).
TEST_P(Servers, HaproxyWithAnotherAllocator) {
  SECMEM_REQUIRE_SECRETMEM();
  for (const std::string other :
       {"/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}) {
    ASSERT_EQ(access(other.c_str(), R_OK), 0) << other << " is not installed (bootstrap installs it)";
    for (bool shim_first : {true, false}) {
      std::string order = shim_first ? kShim + ":" + other : other + ":" + kShim;
      SCOPED_TRACE("LD_PRELOAD=" + order);
      sockaddr_in addr{};
      std::string port = free_loopback_port(&addr), conf = dir_ + "/haproxy-alloc-" + GetParam() + ".cfg";
      std::ofstream(conf) << "global\n  nbthread 2\ndefaults\n  mode http\n  timeout connect 5s\n"
                          << "  timeout client 5s\n  timeout server 5s\nfrontend tls\n  bind 127.0.0.1:" << port
                          << " ssl crt " << dir_ << "/" << GetParam() << ".combined\n"
                          << "  http-request return status 200 content-type text/plain string ok\n";
      Running server(start({"haproxy", "-db", "-f", conf}, {"LD_PRELOAD=" + order}));
      ASSERT_TRUE(wait_listening(addr, 15)) << "haproxy did not listen";
      for (int i = 0; i < 3; ++i) {
        Result fetch = run({"curl", "-s", "--max-time", "20", "--cacert", cert(), "--resolve",
                            "localhost:" + port + ":127.0.0.1", "https://localhost:" + port + "/"});
        EXPECT_EQ(fetch.status, 0) << fetch.err;
        EXPECT_EQ(fetch.out, "ok");
      }
      std::string name = "haproxy, " + other.substr(other.rfind('/') + 1) + (shim_first ? " after the shim" : " first");
      scan_tree(server.child.pid, true, name, key(), "", !shim_first);
    }
  }
}

// PostgreSQL 15 with ssl=on: the postmaster, its auxiliary processes, and a
// backend serving a TLS connection that is still open during the scan.
TEST_P(Servers, Postgresql) {
  SECMEM_REQUIRE_SECRETMEM();
  ASSERT_EQ(access((kPgBin + "/postgres").c_str(), X_OK), 0)
      << "PostgreSQL 15 is not installed (bootstrap installs it)";
  std::string pg = dir_ + "/pg-" + GetParam();
  std::vector<std::string> as_postgres = {"runuser", "-u", "postgres", "--"};
  ASSERT_EQ(system(("mkdir -p " + pg + " && cp " + key() + " " + pg + "/server.key && cp " + cert() + " " + pg +
                    "/server.crt && chmod 600 " + pg + "/server.key && chown -R postgres " + pg)
                       .c_str()),
            0);
  std::vector<std::string> initdb = as_postgres;
  initdb.insert(initdb.end(), {kPgBin + "/initdb", "-D", pg + "/db", "-A", "trust", "-U", "postgres"});
  ASSERT_EQ(run(initdb).status, 0);
  int plain = 0;
  for (bool shim : {false, true}) {
    sockaddr_in addr{};
    std::string port = free_loopback_port(&addr);
    std::vector<std::string> argv = as_postgres;
    argv.push_back("env");
    for (const std::string &entry : env(shim)) argv.push_back(entry);
    argv.insert(argv.end(), {kPgBin + "/postgres", "-D", pg + "/db", "-c", "ssl=on", "-c",
                             "ssl_cert_file=" + pg + "/server.crt", "-c", "ssl_key_file=" + pg + "/server.key", "-c",
                             "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + pg, "-p", port});
    Running server(start(argv));
    ASSERT_TRUE(wait_listening(addr, 15)) << "postgres did not listen";
    std::string conn = "host=127.0.0.1 port=" + port + " user=postgres sslmode=require dbname=postgres";
    // The postmaster listens before its startup process has finished: until
    // then a session is refused with "the database system is starting up".
    Result query;
    for (int i = 0; i < 150; ++i) {
      query = run({"psql", conn, "-Atc", "select ssl from pg_stat_ssl where pid = pg_backend_pid()"});
      if (query.err.find("starting up") == std::string::npos) break;
      usleep(100000);
    }
    EXPECT_EQ(query.out, "t\n") << query.err;
    // A session still open during the scan, scanned once it has answered a
    // first query (its backend has made the handshake; before that it may be
    // signing with the key).
    Child open_session = start({"psql", conn, "-At", "-c", "select 'ready'", "-c", "select pg_sleep(3)"});
    std::string said;
    pollfd wait_out{open_session.out, POLLIN, 0};
    char c = 0;
    while (said.find("ready\n") == std::string::npos && poll(&wait_out, 1, 30000) == 1 &&
           read(open_session.out, &c, 1) == 1)
      said += c;
    EXPECT_EQ(said, "ready\n") << "the open session did not answer";
    // runuser is the parent: the postmaster and its children are below it.
    int found = scan_tree(server.child.pid, shim, "postgres");
    if (!shim) plain = found;
    finish(open_session);
  }
  EXPECT_GT(plain, 0) << "the scan finds the key where nothing protects it";
}

// Apache 2.4 with mod_ssl, prefork and event MPMs (children run as www-data),
// then a graceful restart (SIGUSR1) to a new key: the new key's holders and
// the old key, everywhere, are scanned.
TEST_P(Servers, Apache) {
  SECMEM_REQUIRE_SECRETMEM();
  std::string type = GetParam();
  for (const char *mpm : {"prefork", "event"}) {
    int plain = 0, plain_after = 0;
    for (bool shim : {false, true}) {
      SCOPED_TRACE(std::string(mpm) + (shim ? " under the shim" : " plain"));
      std::string root = dir_ + "/apache-" + mpm + "-" + type + (shim ? "-shim" : "-plain");
      ASSERT_EQ(system(("mkdir -p " + root + " && echo hello > " + root + "/index.html && cp " + key() + " " + root +
                        "/key.pem && cp " + cert() + " " + root + "/cert.pem")
                           .c_str()),
                0);
      ASSERT_TRUE(make_key_and_cert(type, root + "/new.pem", root + "/new.crt")); // the key it restarts to
      ASSERT_EQ(system(("chmod -R a+rX " + root).c_str()), 0);
      sockaddr_in addr{};
      std::string port = free_loopback_port(&addr), conf = root + "/httpd.conf";
      std::ofstream(conf) << "ServerRoot " << root << "\nPidFile " << root << "/httpd.pid\nErrorLog " << root
                          << "/error.log\nServerName localhost\nListen 127.0.0.1:" << port << "\nLoadModule mpm_" << mpm
                          << "_module /usr/lib/apache2/modules/mod_mpm_" << mpm
                          << ".so\nLoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n"
                          << "LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n"
                          << "User www-data\nGroup www-data\nStartServers 2\nDocumentRoot " << root << "\n<Directory "
                          << root << ">\n  Require all granted\n</Directory>\nSSLEngine on\nSSLCertificateFile " << root
                          << "/cert.pem\nSSLCertificateKeyFile " << root << "/key.pem\nSSLSessionCache none\n";
      // Its own session: a graceful restart signals the whole process group.
      Running server(start({"apache2", "-f", conf, "-DFOREGROUND"}, env(shim), [] { setsid(); }));
      ASSERT_TRUE(wait_listening(addr, 15)) << read_file(root + "/error.log");
      auto fetch = [&](const std::string &ca) {
        return run({"curl", "-s", "--max-time", "20", "--cacert", ca, "--resolve", "localhost:" + port + ":127.0.0.1",
                    "https://localhost:" + port + "/index.html"});
      };
      for (int i = 0; i < 3; ++i) {
        Result page = fetch(cert());
        EXPECT_EQ(page.status, 0) << page.err << read_file(root + "/error.log");
        EXPECT_EQ(page.out, "hello\n");
      }
      int found = scan_tree(server.child.pid, shim, std::string("apache ") + mpm);
      // A graceful restart to the new key: the parent reloads it, new children serve it.
      ASSERT_EQ(system(("cp " + root + "/new.pem " + root + "/key.pem && cp " + root + "/new.crt " + root + "/cert.pem")
                           .c_str()),
                0);
      kill(server.child.pid, SIGUSR1);
      bool renewed = false;
      for (int i = 0; i < 100 && !renewed; ++i) {
        usleep(100000);
        renewed = fetch(root + "/new.crt").out == "hello\n";
      }
      ASSERT_TRUE(renewed) << read_file(root + "/error.log");
      usleep(500000); // the old children finish
      int found_new = scan_tree(server.child.pid, shim, std::string("apache ") + mpm + ", new key", root + "/new.pem");
      int found_old = scan_tree(server.child.pid, shim, std::string("apache ") + mpm + ", old key", key());
      if (!shim) {
        plain = found;
        plain_after = found_new + found_old;
      }
    }
    EXPECT_GT(plain, 0) << mpm << ": the scan finds the key where nothing protects it";
    EXPECT_GT(plain_after, 0) << mpm << ": the scan finds a key after the restart where nothing protects it";
  }
}

// Apache with its key encrypted (PKCS#8) and the passphrase given by
// SSLPassPhraseDialog exec: mod_ssl keeps the decrypted key's DER encoding
// in a buffer of its own (i2d_PrivateKey), to load it again at each restart
// without asking: that buffer is in the secret heap under the shim, in the
// parent and in every child, also after a graceful restart (which loads the
// key from it).
TEST_P(Servers, ApacheEncryptedKey) {
  SECMEM_REQUIRE_SECRETMEM();
  int plain = 0;
  for (bool shim : {false, true}) {
    SCOPED_TRACE(shim ? "under the shim" : "plain");
    std::string root = dir_ + "/apache-encrypted-" + GetParam() + (shim ? "-shim" : "-plain");
    ASSERT_EQ(system(("mkdir -p " + root + " && echo hello > " + root + "/index.html && cp " + cert() + " " + root +
                      "/cert.pem && openssl pkcs8 -topk8 -v2 aes-256-cbc -in " + key() + " -out " + root +
                      "/key.pem -passout pass:apache-test && printf '#!/bin/sh\\necho apache-test\\n' > " + root +
                      "/pass.sh && chmod 755 " + root + "/pass.sh && chmod -R a+rX " + root)
                         .c_str()),
              0);
    ASSERT_NE(read_file(root + "/key.pem").find("ENCRYPTED PRIVATE KEY"), std::string::npos);
    sockaddr_in addr{};
    std::string port = free_loopback_port(&addr), conf = root + "/httpd.conf";
    std::ofstream(conf) << "ServerRoot " << root << "\nPidFile " << root << "/httpd.pid\nErrorLog " << root
                        << "/error.log\nServerName localhost\nListen 127.0.0.1:" << port
                        << "\nLoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so\n"
                        << "LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n"
                        << "LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n"
                        << "User www-data\nGroup www-data\nStartServers 2\nDocumentRoot " << root << "\n<Directory "
                        << root << ">\n  Require all granted\n</Directory>\nSSLPassPhraseDialog exec:" << root
                        << "/pass.sh\nSSLEngine on\nSSLCertificateFile " << root << "/cert.pem\nSSLCertificateKeyFile "
                        << root << "/key.pem\nSSLSessionCache none\n";
    Running server(start({"apache2", "-f", conf, "-DFOREGROUND"}, env(shim), [] { setsid(); }));
    ASSERT_TRUE(wait_listening(addr, 15)) << read_file(root + "/error.log");
    auto fetch = [&] {
      return run({"curl", "-s", "--max-time", "20", "--cacert", cert(), "--resolve", "localhost:" + port + ":127.0.0.1",
                  "https://localhost:" + port + "/index.html"});
    };
    for (int i = 0; i < 3; ++i) {
      Result page = fetch();
      EXPECT_EQ(page.status, 0) << page.err << read_file(root + "/error.log");
      EXPECT_EQ(page.out, "hello\n");
    }
    int found = scan_tree(server.child.pid, shim, "apache, encrypted key");
    // A graceful restart: the key comes from mod_ssl's buffer, not the file.
    std::string log_before = read_file(root + "/error.log");
    kill(server.child.pid, SIGUSR1);
    bool restarted = false;
    for (int i = 0; i < 100 && !restarted; ++i) {
      usleep(100000);
      restarted = read_file(root + "/error.log").size() > log_before.size() && fetch().out == "hello\n";
    }
    ASSERT_TRUE(restarted) << read_file(root + "/error.log");
    usleep(500000); // the old children finish
    found += scan_tree(server.child.pid, shim, "apache, encrypted key, restarted");
    if (!shim) plain = found;
  }
  EXPECT_GT(plain, 0) << "the scan finds mod_ssl's copy of the key where nothing protects it";
}

// OpenSSH's sshd with a host key of each type (its own key format, made by
// ssh-keygen): a client logs in with a key of its own and runs a command that
// waits, while the listener and the login's sshd process are scanned (once
// the command has spoken). OpenSSH keeps private keys encrypted in memory between uses
// (sshkey_shield_private), so the plain run finds none either: here the test
// is that sshd works the same under the shim and that every sshd process
// holds a secretmem mapping and no readable component.
TEST_P(Servers, Sshd) {
  SECMEM_REQUIRE_SECRETMEM();
  ASSERT_EQ(access("/usr/sbin/sshd", X_OK), 0) << "openssh-server is not installed (bootstrap installs it)";
  std::string type = GetParam(), base = dir_ + "/ssh-" + type;
  const char *keygen = type == "RSA" ? "-t rsa -b 2048" : type == "EC" ? "-t ecdsa -b 256" : "-t ed25519";
  ASSERT_EQ(system(("ssh-keygen -q -N '' " + std::string(keygen) + " -f " + base + "-host && ssh-keygen -q -N '' -t " +
                    "ed25519 -f " + base + "-user && cp " + base + "-user.pub " + base + "-authorized && mkdir -p " +
                    "/run/sshd")
                       .c_str()),
            0);
  for (bool shim : {false, true}) {
    SCOPED_TRACE(shim ? "under the shim" : "plain");
    sockaddr_in addr{};
    std::string port = free_loopback_port(&addr);
    Running server(start({"/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-o", "HostKey=" + base + "-host", "-o",
                          "ListenAddress=127.0.0.1", "-o", "Port=" + port, "-o", "PidFile=none", "-o",
                          "AuthorizedKeysFile=" + base + "-authorized", "-o", "StrictModes=no"},
                         env(shim)));
    ASSERT_TRUE(wait_listening(addr, 15)) << "sshd did not listen";
    Child session = start({"timeout", "30", "ssh", "-i", base + "-user", "-o", "StrictHostKeyChecking=no", "-o",
                           "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-p", port,
                           "root@127.0.0.1", "echo ok; sleep 3"});
    // Logged in once the command has spoken: before that the connection's
    // process may be between loading the host key and shielding it (every
    // component of an RSA key was seen in its heap then, once in three runs).
    std::string said;
    pollfd wait_out{session.out, POLLIN, 0};
    char c;
    while (said.find("ok\n") == std::string::npos && poll(&wait_out, 1, 30000) == 1 && read(session.out, &c, 1) == 1)
      said += c;
    EXPECT_EQ(said, "ok\n") << "no session under sshd";
    EXPECT_GE(process_tree(server.child.pid).size(), 3u) << "listener, monitor, session";
    scan_tree(server.child.pid, shim, "sshd", base + "-host", "sshd");
    Result out = finish(session);
    EXPECT_EQ(out.status, 0) << out.err;
    EXPECT_EQ(said + out.out, "ok\n");
  }
}

INSTANTIATE_TEST_SUITE_P(Keys, Servers, testing::Values("RSA", "EC", "Ed25519"),
                         [](const testing::TestParamInfo<const char *> &info) { return std::string(info.param); });

// One round of `python -m benchmarks.reexec_put`: how long one acknowledged put takes in pvxs when
// each write is a new channel-put (INIT, then EXEC: what p4p does) and when one operation is kept
// and re-executed (autoExec(false) + reExecPut, an expert API that p4p does not expose).
// Usage: reexec_put PV COUNT; prints the two medians in ms on one line.
#include <pvxs/client.h>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>
using namespace pvxs;
using clk = std::chrono::steady_clock;

struct Flag {
    std::mutex m; std::condition_variable c; bool done = false;
    void set() { std::lock_guard<std::mutex> g(m); done = true; c.notify_one(); }
    void wait() { std::unique_lock<std::mutex> g(m); c.wait(g, [this] { return done; }); done = false; }
};

static double median(std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }

int main(int argc, char** argv) {
    const std::string pv = argv[1];
    const int n = atoi(argv[2]);
    auto ctxt = client::Context::fromEnv();
    ctxt.get(pv).exec()->wait(5.0);
    {
        std::vector<double> fresh, kept;
        for (int i = 0; i < n; i++) {
            auto t0 = clk::now();
            auto op = ctxt.put(pv).set("value", i % 2).pvRequest("field()record[block=true]").exec();
            op->wait(5.0);
            // timed until acknowledged; the operation is released after, as the p4p round does
            fresh.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
        }
        Flag inited, answered;
        Value proto;
        auto op = ctxt.put(pv).autoExec(false).pvRequest("field()record[block=true]")
                      .onInit([&](const Value& p) { proto = p.cloneEmpty(); inited.set(); })
                      .build([](Value&& v) { return std::move(v); })
                      .result([&](client::Result&& r) { r(); })
                      .exec();
        inited.wait();
        for (int i = 0; i < n; i++) {
            Value v = proto.cloneEmpty();
            v["value"] = i % 2;
            auto t0 = clk::now();
            op->reExecPut(v, [&](client::Result&& r) { r(); answered.set(); });
            answered.wait();
            kept.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
        }
        op->cancel();
        printf("%.4f %.4f\n", median(fresh), median(kept));
    }
    return 0;
}

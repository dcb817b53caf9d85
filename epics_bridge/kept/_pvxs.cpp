// epics_bridge.kept._pvxs: one PV written again and again through one kept pvxs operation.
//
// Why this exists: each p4p put is a new channel-put, an INIT round trip for the PV's type and
// then the EXEC with the value, and each is closed afterwards with two hops to pvxs's network
// thread. The engine writes the same few PVs every cycle and every heartbeat period (Busy, the
// CycleEnd group, Heartbeat), so it keeps one operation per PV and re-executes it
// (autoExec(false) + reExecPut, pvxs's expert API, which p4p does not expose): one round trip,
// nothing to close. epics_bridge/kept/__init__.py and io.py decide when to use it, and fall back to
// p4p otherwise.
//
// Threads: pvxs's callbacks run on the context's own network thread and touch only the C++ state
// below, under its mutex; they never call into Python, so that thread never waits for the GIL.
// Python's threads release the GIL only to wait for an answer (and to make or close a context).
//
// What a kept operation does in pvxs (src/clientget.cpp) and how each case is met here:
// - a re-execution asked for while the operation is not idle (still in INIT, or reconnecting) is
//   dropped without a callback: every (re)INIT's onInit issues again a write still unanswered;
// - the channel drops while idle: the operation goes back to INIT by itself (onInit again, with the
//   type the restarted IOC serves); while executing: it ends with Disconnect, and is made anew by
//   the next write;
// - a write refused by the server leaves the operation usable; a write unanswered in time is
//   cancelled with its operation (as p4p's path cancels it), so no late write lands after a timeout.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <pvxs/client.h>
#include <pvxs/version.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;
using namespace pvxs;

namespace {

// Outcomes, as io.py maps them to its PVError classes.
enum Outcome : int { OK = 0, PENDING = -1, TIMEOUT = 1, DISCONNECTED = 2, REJECTED = 3, UNFIT = 4 };

// One field to set: its name ("" for the PV's value: value.index of an enum, else value) and a number.
struct Field {
    std::string name;
    bool integer;
    int64_t i;
    double d;
};

// One write: the handle its caller waits on or asks about, answered at most once.
struct Write {
    bool done = false;
    int outcome = PENDING;
    std::string message;
};
using WriteRef = std::shared_ptr<Write>;

// What a PV's writes share with pvxs's callbacks.
struct State {
    std::mutex lock;
    std::condition_variable answered;
    std::weak_ptr<client::Operation> op;  // the Writer holds it: a strong one here would be a cycle
    Value type;                           // from the last INIT; empty until then
    bool broken = false;                  // ended (disconnected, refused at INIT, given up): make anew
    WriteRef current;                     // the write in flight, if any
    bool issued = false;                  // ... handed to pvxs since the last INIT
    std::vector<Field> fields;            // ... and what it sets
    uint64_t inits = 0;                   // INITs answered: one per operation made, one per reconnection

    void finish(const WriteRef& write, int result, const std::string& why) {  // lock held
        if (!write || write->done)
            return;  // an answer to a write already given up
        write->done = true;
        write->outcome = result;
        write->message = why;
        if (current == write)
            current.reset();
        answered.notify_all();
    }

    static Value filled(const Value& type, const std::vector<Field>& fields) {
        Value value(type.cloneEmpty());
        for (const auto& f : fields) {
            const char* name = f.name.c_str();
            if (f.name.empty())
                name = value["value.index"] ? "value.index" : "value";
            Value field(value[name]);
            if (!field)
                throw std::runtime_error(std::string("the PV has no field ") + name);
            if (f.integer)
                field.from(f.i);
            else
                field.from(f.d);
        }
        return value;
    }

    // Hand the write in flight to pvxs once the operation knows its type. Lock held; any thread.
    void issue(const std::shared_ptr<State>& self) {
        auto kept = op.lock();
        if (!current || issued || !type || !kept)
            return;
        Value value;
        try {
            value = filled(type, fields);
        } catch (std::exception& e) {
            finish(current, UNFIT, e.what());
            return;
        }
        issued = true;
        WriteRef write = current;
        kept->reExecPut(value, [self, write](client::Result&& result) { self->answer(write, std::move(result)); });
    }

    void answer(const WriteRef& write, client::Result&& result) {  // pvxs's thread
        std::lock_guard<std::mutex> guard(lock);
        try {
            result();
            finish(write, OK, "");
        } catch (client::Disconnect&) {
            broken = true;  // the operation ended with the connection
            finish(write, DISCONNECTED, "disconnected");
        } catch (client::RemoteError& e) {
            finish(write, REJECTED, e.what());  // the operation stays usable
        } catch (std::exception& e) {
            broken = true;
            finish(write, REJECTED, e.what());
        }
    }
};

class Client {
public:
    explicit Client(const std::map<std::string, std::string>& conf) {
        client::Config config;
        config.applyDefs(conf);
        py::gil_scoped_release nogil;
        context = config.build();
    }
    void close() {
        py::gil_scoped_release nogil;
        context.close();
    }
    client::Context context;
};

using Answer = std::pair<int, std::string>;

class Writer {
public:
    Writer(std::shared_ptr<Client> client, std::string name)
        : client(std::move(client)), name(std::move(name)), state(std::make_shared<State>()) {}
    ~Writer() { close(); }

    // Start writing ``fields``: the write's handle, or None when a write of this PV is already in
    // flight (the caller writes another way).
    WriteRef start(const py::list& values) {
        std::vector<Field> fields;
        for (auto item : values) {
            auto pair = item.cast<py::tuple>();
            py::handle number = pair[1];
            Field f{pair[0].cast<std::string>(), !PyFloat_Check(number.ptr()), 0, 0.0};
            if (f.integer)
                f.i = number.cast<int64_t>();
            else
                f.d = number.cast<double>();
            fields.push_back(std::move(f));
        }
        // The GIL stays held: nothing here waits (pvxs's exec() and an operation's release only
        // queue work for its thread), and giving it up costs a wait to take it back among many
        // task threads.
        std::shared_ptr<client::Operation> old;
        auto write = std::make_shared<Write>();
        bool fresh;
        {
            std::lock_guard<std::mutex> guard(state->lock);
            if (state->current)
                return nullptr;
            fresh = state->broken || !op;
            if (fresh) {
                old = std::move(op);
                state->broken = false;
                state->type = Value();
            }
            state->current = write;
            state->issued = false;
            state->fields = std::move(fields);
            if (!fresh)
                state->issue(state);
        }
        if (fresh) {
            old.reset();  // cancelled on pvxs's thread (syncCancel(false)): no wait here
            auto made = create();
            std::lock_guard<std::mutex> guard(state->lock);
            op = made;
            state->op = made;
            state->issue(state);  // in case the INIT was answered before ``op`` was known
        }
        return write;
    }

    // Wait up to ``timeout`` s for ``write``; one not answered by then is given up and its
    // operation cancelled (no late write lands after a timeout).
    Answer wait(const WriteRef& write, double timeout) {
        py::gil_scoped_release nogil;
        std::unique_lock<std::mutex> guard(state->lock);
        auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
        state->answered.wait_until(guard, deadline, [&] { return write->done; });
        return settle(write, guard);
    }

    // ``write``'s outcome now: PENDING while it travels.
    Answer outcome(const WriteRef& write) {
        std::lock_guard<std::mutex> guard(state->lock);
        return {write->outcome, write->message};
    }

    // Give up ``write`` if it is still on its way (cancelling its operation); its outcome.
    Answer abandon(const WriteRef& write) {
        std::unique_lock<std::mutex> guard(state->lock);
        return settle(write, guard);
    }

    uint64_t inits() {
        std::lock_guard<std::mutex> guard(state->lock);
        return state->inits;
    }

    void close() {
        std::shared_ptr<client::Operation> old;
        std::lock_guard<std::mutex> guard(state->lock);
        old = std::move(op);
        state->broken = true;
        state->finish(state->current, TIMEOUT, "closed");
    }

private:
    Answer settle(const WriteRef& write, std::unique_lock<std::mutex>& guard) {
        std::shared_ptr<client::Operation> old;
        if (!write->done) {
            state->finish(write, TIMEOUT, "no answer");
            state->broken = true;
            old = std::move(op);
        }
        Answer result{write->outcome, write->message};
        guard.unlock();
        return result;  // ``old`` (if any) is cancelled here, without the lock
    }

    std::shared_ptr<client::Operation> create() {
        auto self = state;
        return client->context.put(name)
            .autoExec(false)
            .syncCancel(false)
            .pvRequest("field()record[block=true]")
            .onInit([self](const Value& type) {
                std::lock_guard<std::mutex> guard(self->lock);
                self->type = type.cloneEmpty();
                self->inits++;
                self->issued = false;  // a write dropped while the operation was not idle goes again
                self->issue(self);
            })
            .build([](Value&& value) { return std::move(value); })
            .result([self](client::Result&& result) {
                // Only when the operation ends before a re-execution was asked (e.g. INIT refused).
                std::lock_guard<std::mutex> guard(self->lock);
                self->broken = true;
                try {
                    result();
                    self->finish(self->current, REJECTED, "the operation ended");
                } catch (client::Disconnect&) {
                    self->finish(self->current, DISCONNECTED, "disconnected");
                } catch (std::exception& e) {
                    self->finish(self->current, REJECTED, e.what());
                }
            })
            .exec();
    }

    std::shared_ptr<Client> client;
    std::string name;
    std::shared_ptr<State> state;
    std::shared_ptr<client::Operation> op;  // guarded by state->lock
};

}  // namespace

PYBIND11_MODULE(_pvxs, m) {
    m.doc() = "One PV written again and again through one kept pvxs operation (see _pvxs.cpp).";
    // The headers this was built with against the pvxs loaded (by p4p) in this process.
    m.def("usable", [] { return version_abi_check(); });
    m.attr("PENDING") = int(PENDING);
    m.attr("OK") = int(OK);
    m.attr("TIMEOUT") = int(TIMEOUT);
    m.attr("DISCONNECTED") = int(DISCONNECTED);
    m.attr("REJECTED") = int(REJECTED);
    m.attr("UNFIT") = int(UNFIT);
    py::class_<Client, std::shared_ptr<Client>>(m, "Client")
        .def(py::init<const std::map<std::string, std::string>&>())
        .def("close", &Client::close);
    py::class_<Write, WriteRef>(m, "Write");
    py::class_<Writer>(m, "Writer")
        .def(py::init<std::shared_ptr<Client>, std::string>())
        .def("start", &Writer::start)
        .def("wait", &Writer::wait)
        .def("outcome", &Writer::outcome)
        .def("abandon", &Writer::abandon)
        .def("inits", &Writer::inits)
        .def("close", &Writer::close);
}

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
#include <deque>
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

// One update of a number PV: a number, the kind of a value that is not one, or a dropped link.
enum Tag : int { NUMBER = 0, OTHER = 1, DROPPED = 2 };
struct Item {
    int tag;
    bool integer;
    int64_t i;
    double d;
    std::string text;
};

Item reading(const Value& value) {
    Value field(value["value"]);
    if (!field)
        return Item{OTHER, false, 0, 0.0, "structure"};
    auto code = field.type();
    if (code == TypeCode::Struct) {
        Value index(value["value.index"]);
        if (!index || value.id().rfind("epics:nt/NTEnum", 0) != 0)
            return Item{OTHER, false, 0, 0.0, "structure"};
        return Item{NUMBER, true, index.as<int64_t>(), 0.0, {}};
    }
    if (code.isarray())
        return Item{OTHER, false, 0, 0.0, "array"};
    switch (code.kind()) {
    case Kind::Bool:
    case Kind::Integer:
        if (code == TypeCode::UInt64 && field.as<uint64_t>() > uint64_t(INT64_MAX))
            return Item{NUMBER, false, 0, field.as<double>(), {}};
        return Item{NUMBER, true, field.as<int64_t>(), 0.0, {}};
    case Kind::Real:
        return Item{NUMBER, false, 0, field.as<double>(), {}};
    case Kind::String:
        return Item{OTHER, false, 0, 0.0, "string"};
    default:
        return Item{OTHER, false, 0, 0.0, "structure"};
    }
}

// A number PV's subscription (a task's Trigger), read on pvxs's thread as each update arrives.
//
// Why: a p4p subscription calls into Python (taking the GIL on pvxs's one network thread) for every
// update, and each pop() gives the GIL up and takes it back. A task's loop needs waking only for
// an update that asks it to act: a request (non-zero), a dropped or restored link, a value that is
// not a number. Its own acknowledge (Trigger back to 0) waits here until the loop next reads, which
// it does before deciding anything. Updates are kept in arrival order; like pvxs's own queue, a
// backlog of values is squashed into its latest (a dropped link is never squashed away).
class Watch {
public:
    Watch(std::shared_ptr<Client> client, const std::string& name, py::object wake)
        : shared(std::make_shared<Shared>()) {
        shared->wake = wake.release().ptr();  // our reference, dropped by close() with the GIL held
        auto state = shared;
        py::gil_scoped_release nogil;  // exec() may run the event at once on pvxs's thread, which rings
        sub = client->context.monitor(name)
                  .maskConnected(true)
                  .maskDisconnected(false)
                  .event([state](client::Subscription& s) { state->read(s); })
                  .exec();
    }
    ~Watch() { close(); }

    // Every update kept since the last take, oldest first: (tag, number or text).
    py::list take() {
        std::deque<Item> items;
        {
            std::lock_guard<std::mutex> guard(shared->lock);
            items.swap(shared->items);
        }
        py::list out;
        for (const auto& item : items) {
            if (item.tag == NUMBER && item.integer)
                out.append(py::make_tuple(int(NUMBER), item.i));
            else if (item.tag == NUMBER)
                out.append(py::make_tuple(int(NUMBER), item.d));
            else
                out.append(py::make_tuple(int(item.tag), item.text));
        }
        return out;
    }

    void close() {
        std::shared_ptr<client::Subscription> old = std::move(sub);
        {
            py::gil_scoped_release nogil;  // cancelling waits for an event under way, which may want the GIL
            old.reset();
        }
        PyObject* wake;
        {
            std::lock_guard<std::mutex> guard(shared->lock);
            wake = shared->wake;
            shared->wake = nullptr;
        }
        Py_XDECREF(wake);
    }

private:
    struct Shared {
        std::mutex lock;
        std::deque<Item> items;
        bool connected = false;
        PyObject* wake = nullptr;

        void read(client::Subscription& s) {  // pvxs's thread
            bool ring = false;
            while (true) {
                Item item{NUMBER, true, 0, 0.0, {}};
                try {
                    Value value(s.pop());
                    if (!value)
                        break;
                    item = reading(value);
                } catch (std::exception& e) {  // Disconnect, Finished, RemoteError
                    item = Item{DROPPED, false, 0, 0.0, e.what()};
                }
                std::lock_guard<std::mutex> guard(lock);
                bool zero = item.tag == NUMBER && (item.integer ? item.i == 0 : item.d == 0.0);
                ring = ring || !zero || !connected;
                connected = item.tag != DROPPED;
                keep(std::move(item));
            }
            if (!ring)
                return;
            py::gil_scoped_acquire gil;
            PyObject* wake;
            {
                std::lock_guard<std::mutex> guard(lock);
                wake = shared_wake();
            }
            if (!wake)
                return;
            PyObject* result = PyObject_CallNoArgs(wake);
            if (!result) {
                PyErr_WriteUnraisable(wake);
            }
            Py_XDECREF(result);
            Py_DECREF(wake);
        }

        PyObject* shared_wake() {  // lock held: a reference of the caller's own, or null once closed
            Py_XINCREF(wake);
            return wake;
        }

        void keep(Item&& item) {  // lock held
            bool value = item.tag != DROPPED;
            if (value && items.size() >= 4 && items.back().tag != DROPPED)
                items.back() = std::move(item);
            else
                items.push_back(std::move(item));
        }

    };

    std::shared_ptr<Shared> shared;
    std::shared_ptr<client::Subscription> sub;
};

// Updates of many number PVs with their IOC timestamps, for a client that waits on them (the
// handshake's client side in epics_bridge.client: tests, the benchmark). Read on pvxs's thread and
// handed over in bulk: a p4p subscription per PV costs its client a GIL hand-off for every update
// and every pop, which on a shared 2-core host is CPU taken from the service being measured.
class Feed {
public:
    Feed(std::shared_ptr<Client> client, const std::vector<std::string>& names)
        : shared(std::make_shared<Shared>()) {
        py::gil_scoped_release nogil;
        for (size_t index = 0; index < names.size(); index++) {
            auto state = shared;
            subs.push_back(client->context.monitor(names[index])
                               .maskConnected(true)
                               .maskDisconnected(true)
                               .event([state, index](client::Subscription& s) { state->read(s, index); })
                               .exec());
        }
    }
    ~Feed() { close(); }

    // The numbers recorded since the last take, oldest first, as (index of the PV, number, IOC
    // timestamp in POSIX seconds, arrival in time.perf_counter()'s seconds); waits up to
    // ``timeout`` s for the first.
    py::list take(double timeout) {
        std::vector<Stamped> got;
        {
            py::gil_scoped_release nogil;
            std::unique_lock<std::mutex> guard(shared->lock);
            auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
            shared->arrived.wait_until(guard, deadline, [&] { return !shared->items.empty(); });
            got.swap(shared->items);
        }
        py::list out;
        for (const auto& item : got) {
            py::object number = item.integer ? py::object(py::int_(item.i)) : py::object(py::float_(item.d));
            out.append(py::make_tuple(item.index, number, item.stamp, item.arrival));
        }
        return out;
    }

    void close() {
        std::vector<std::shared_ptr<client::Subscription>> old;
        old.swap(subs);
        py::gil_scoped_release nogil;
        old.clear();
    }

private:
    struct Stamped {
        size_t index;
        bool integer;
        int64_t i;
        double d;
        double stamp;
        double arrival;
    };

    struct Shared {
        std::mutex lock;
        std::condition_variable arrived;
        std::vector<Stamped> items;

        void read(client::Subscription& s, size_t index) {  // pvxs's thread
            while (true) {
                Value value;
                try {
                    value = s.pop();
                } catch (std::exception&) {
                    continue;  // a subscription's end: the client waits on values only
                }
                if (!value)
                    return;
                Item item(reading(value));
                if (item.tag != NUMBER)
                    continue;
                Value secs(value["timeStamp.secondsPastEpoch"]), nanos(value["timeStamp.nanoseconds"]);
                double stamp = secs && nanos ? secs.as<double>() + nanos.as<double>() * 1e-9 : 0.0;
                double arrival = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
                std::lock_guard<std::mutex> guard(lock);
                items.push_back(Stamped{index, item.integer, item.i, item.d, stamp, arrival});
                arrived.notify_all();
            }
        }
    };

    std::shared_ptr<Shared> shared;
    std::vector<std::shared_ptr<client::Subscription>> subs;
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
    py::class_<Watch>(m, "Watch")
        .def(py::init<std::shared_ptr<Client>, const std::string&, py::object>())
        .def("take", &Watch::take)
        .def("close", &Watch::close);
    py::class_<Feed>(m, "Feed")
        .def(py::init<std::shared_ptr<Client>, const std::vector<std::string>&>())
        .def("take", &Feed::take)
        .def("close", &Feed::close);
    m.attr("NUMBER") = int(NUMBER);
    m.attr("OTHER") = int(OTHER);
    m.attr("DROPPED") = int(DROPPED);
}

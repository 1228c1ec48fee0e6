"""The programs the verifier runs inside one sandbox (sources as strings; stdlib only).

``HARNESS`` runs as the sandbox's pid 1 (trusted code): it reads the cases, deletes the file,
makes itself non-dumpable, and for each case starts a ``WORKER`` process that executes the
candidate's source. The tests run in the harness; the candidate's functions are reached through
a pipe protocol that carries only plain data (None, bool, int, float, complex, str, bytes, and
lists/tuples/dicts/sets of those) plus opaque handles. So the values a test compares are real
built-in objects made by the harness, never the candidate's objects (no forged ``__eq__``, no
patched builtins, no early exit that looks like success), and the verdicts leave through a pipe
only the harness holds, after a nonce the candidate never sees.
"""

WORKER = r'''
import json, os, sys
REQ, RESP = int(sys.argv[1]), int(sys.argv[2])
_write, _loads, _dumps = os.write, json.loads, json.dumps
_rd = os.fdopen(REQ, "rb", buffering=0)
spaces, table = {}, {}
def enc(x):
    if x is None or type(x) is bool:
        return x
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int.__index__(x) if type(x) is int else int(x)
    if isinstance(x, float):
        return {"f": float.__repr__(float(x))}
    if isinstance(x, str):
        return {"u": str.__str__(x)} if type(x) is not str else x
    if isinstance(x, complex):
        return {"c": [float.__repr__(x.real), float.__repr__(x.imag)]}
    if isinstance(x, (bytes, bytearray)):
        return {"b": bytes(x).hex()}
    if type(x) in (list, tuple, set, frozenset):
        key = {list: "l", tuple: "t", set: "s", frozenset: "z"}[type(x)]
        return {key: [enc(v) for v in x]}
    if type(x) is dict:
        return {"d": [[enc(k), enc(v)] for k, v in x.items()]}
    table[id(x)] = x
    return {"h": id(x)}
def dec(x):
    if isinstance(x, dict):
        if "h" in x:
            return table[x["h"]]
        (k, v), = x.items()
        if k == "f": return float(v)
        if k == "c": return complex(float(v[0]), float(v[1]))
        if k == "b": return bytes.fromhex(v)
        if k == "u": return v
        if k == "d": return {dec(a): dec(b) for a, b in v}
        return {"l": list, "t": tuple, "s": set, "z": frozenset}[k](dec(i) for i in v)
    return x
def answer(obj):
    data = (_dumps(obj) + "\n").encode()
    while data:
        data = data[_write(RESP, data):]
while True:
    line = _rd.readline()
    if not line:
        os._exit(0)
    req = _loads(line)
    op = req["op"]
    try:
        if op == "load":
            ns = spaces[req["ns"]] = {"__name__": "__main__", "__builtins__": __builtins__}
            exec(compile(req["src"], "candidate.py", "exec"), ns)
            out = {"ok": 1}
        elif op == "get":
            ns = spaces[req["ns"]]
            out = {"v": enc(ns[req["name"]])} if req["name"] in ns else {"missing": 1}
        else:
            obj = table[req["h"]]
            if op == "call":
                v = obj(*[dec(a) for a in req["a"]], **{k: dec(a) for k, a in req["kw"].items()})
            elif op == "attr":
                v = getattr(obj, req["name"])
            elif op == "iter":
                v = iter(obj)
            elif op == "next":
                v = next(obj)
            elif op == "len":
                v = len(obj)
            else:
                v = obj[dec(req["k"])]
            out = {"v": enc(v)}
    except BaseException as e:
        out = {"exc": [type(e).__name__, str(e)[:300]]}
    answer(out)
'''

HARNESS = r'''
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)  # pid 1 acts only on handled signals: handle none
import builtins, ctypes, json, os, select, shutil, subprocess, sys, time
if not sys.flags.isolated or not sys.flags.no_site:
    sys.exit("madopd-sandbox: the harness must run as python -I -S (nothing writable on sys.path)")
i = sys.argv.index("--madopd-channel")
RESULT_FD, NONCE_FD = int(sys.argv[i + 1]), int(sys.argv[i + 2])
for fd in (RESULT_FD, NONCE_FD):
    os.set_inheritable(fd, False)
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0: no /proc/1/{mem,fd,environ}
NONCE = b""
while True:
    chunk = os.read(NONCE_FD, 64)
    if not chunk:
        break
    NONCE += chunk
os.close(NONCE_FD)
with open("cases.json") as fh:
    SPEC = json.load(fh)
os.unlink("cases.json")  # the hidden tests are gone before any candidate code runs
WORKDIR = os.getcwd()  # the private writable /tmp: the candidate's, never the harness's
os.chdir("/")  # read-only: a relative name in trusted code never resolves to a planted file
WORKER = SPEC["worker"]
PER_CASE = float(SPEC["per_case_seconds"])
MAX_LINE = 1 << 25

class WorkerDied(BaseException): pass
class CaseTimeout(BaseException): pass
class ProtocolError(BaseException): pass
class CandidateError(Exception): pass

class Worker:
    def __init__(self):
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "-u", "-c", WORKER, str(req_r), str(resp_w)],
            pass_fds=(req_r, resp_w), stdin=subprocess.DEVNULL, cwd=WORKDIR)
        os.close(req_r); os.close(resp_w)
        self.buf = b""
    def ask(self, req, deadline):
        data = (json.dumps(req) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.req_w, data):]
        except OSError:
            raise WorkerDied()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CaseTimeout()
            ready, _, _ = select.select([self.resp_r], [], [], left)
            if not ready:
                raise CaseTimeout()
            chunk = os.read(self.resp_r, 1 << 20)
            if not chunk:
                raise WorkerDied()
            self.buf += chunk
            if len(self.buf) > MAX_LINE:
                raise ProtocolError("reply too long")
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            out = json.loads(line)
        except (ValueError, RecursionError):
            raise ProtocolError("reply is not JSON")
        if not isinstance(out, dict):
            raise ProtocolError("reply is not an object")
        return out
    def close(self):
        for fd in (self.req_w, self.resp_r):
            try: os.close(fd)
            except OSError: pass
        try: self.proc.kill()
        except OSError: pass
        self.proc.wait()
        reap()

def reap():  # as pid 1, orphans of the candidate become ours
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return

def kill_all_but_me(seconds=5.0):
    """SIGKILL every other process of the run's pid namespace and reap them all (as pid 1,
    kill(-1) reaches exactly this namespace, daemons and setsid sessions included)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            os.kill(-1, 9)
        except ProcessLookupError:
            return True  # nobody left, zombies included
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.001)  # a subreaper's orphans reach us once it is gone
    return False

def _unlock(func, path, exc):  # a directory the candidate made unwritable: ours to open again
    os.chmod(os.path.dirname(path), 0o700)
    func(path)

def _mount_points():
    """Mount points in this sandbox (the kernel's list: the candidate cannot mount)."""
    with open("/proc/self/mountinfo") as fh:
        return {line.split()[4].encode().decode("unicode_escape") for line in fh}

MOUNTS = _mount_points()

def wipe(root):
    """Empty a writable tmpfs, removing links, never following them. Read-only binds below it
    (an interpreter that lives under /tmp) and the directories leading to them stay. True when
    nothing else is left."""
    keep = set()
    for m in MOUNTS:
        while m.startswith(root + "/"):
            keep.add(m)
            m = os.path.dirname(m)
    return _wipe_dir(root, keep)

def _wipe_dir(d, keep):
    for name in os.listdir(d):
        path = os.path.join(d, name)
        try:
            if path in keep:
                if path not in MOUNTS:
                    os.chmod(path, 0o755)
                    _wipe_dir(path, keep)
            elif os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                shutil.rmtree(path, onerror=_unlock)
            else:
                os.unlink(path)
        except OSError:
            pass
    return all(os.path.join(d, n) in keep for n in os.listdir(d))

def fresh_room():
    """Between two cases: nothing of the last candidate survives, no process and no file."""
    return kill_all_but_me() and all([wipe(WORKDIR), wipe("/dev/shm")])

SAFE_EXC = {n: v for n, v in vars(builtins).items()
            if isinstance(v, type) and issubclass(v, Exception)}

class Session:
    def __init__(self, worker, ns_id, deadline):
        self.w, self.ns, self.deadline = worker, ns_id, deadline
    def rpc(self, req):
        out = self.w.ask(req, self.deadline)
        if "exc" in out:
            name, msg = out["exc"] if isinstance(out["exc"], list) and len(out["exc"]) == 2 else ("?", "")
            exc = SAFE_EXC.get(name) if isinstance(name, str) else None
            raise (exc or CandidateError)(f"{name}: {msg}" if exc is None else str(msg))
        if "v" in out:
            return self.dec(out["v"])
        if "missing" in out:
            raise KeyError(req.get("name"))
        if "ok" in out:
            return None
        raise ProtocolError("unknown reply")
    def dec(self, x):
        t = type(x)
        if x is None or t in (bool, int, str):
            return x
        if t is list:
            raise ProtocolError("bare list")
        if t is not dict or len(x) != 1:
            raise ProtocolError("bad value")
        (k, v), = x.items()
        try:
            if k == "h": return Remote(self, int(v))
            if k == "f": return float(str(v))
            if k == "u":
                if type(v) is not str: raise ProtocolError("bad str")
                return v
            if k == "c": return complex(float(str(v[0])), float(str(v[1])))
            if k == "b": return bytes.fromhex(str(v))
            if k == "d": return {self.dec(a): self.dec(b) for a, b in v}
            kind = {"l": list, "t": tuple, "s": set, "z": frozenset}[k]
            if type(v) is not list: raise ProtocolError("bad sequence")
            return kind(self.dec(i) for i in v)
        except (KeyError, TypeError, ValueError, IndexError):
            raise ProtocolError("bad value")
    def enc(self, x):
        t = type(x)
        if x is None or t in (bool, int, str):
            return x
        if t is float: return {"f": repr(x)}
        if t is complex: return {"c": [repr(x.real), repr(x.imag)]}
        if t in (bytes, bytearray): return {"b": bytes(x).hex()}
        if t in (list, tuple, set, frozenset):
            return {{list: "l", tuple: "t", set: "s", frozenset: "z"}[t]: [self.enc(v) for v in x]}
        if t is dict: return {"d": [[self.enc(k), self.enc(v)] for k, v in x.items()]}
        if t is Remote: return {"h": object.__getattribute__(x, "_h")}
        raise TypeError(f"a test cannot pass a {t.__name__} to the candidate (plain data only)")

def _opaque(*_a):
    raise TypeError("a candidate's object is opaque: tests may call it, iterate it, index it, "
                    "take its len or attributes, but not compare it or take its truth value")

class Remote:
    __slots__ = ("_s", "_h")
    def __init__(self, s, h):
        object.__setattr__(self, "_s", s); object.__setattr__(self, "_h", h)
    def _ask(self, op, **kw):
        return object.__getattribute__(self, "_s").rpc({"op": op, "h": object.__getattribute__(self, "_h"), **kw})
    def __call__(self, *a, **kw):
        s = object.__getattribute__(self, "_s")
        return self._ask("call", a=[s.enc(v) for v in a], kw={str(k): s.enc(v) for k, v in kw.items()})
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("attr", name=name)
    def __iter__(self):
        return RemoteIter(self._ask("iter"))
    def __len__(self):
        n = self._ask("len")
        if type(n) is not int: raise TypeError("len is not an int")
        return n
    def __getitem__(self, k):
        return self._ask("item", k=object.__getattribute__(self, "_s").enc(k))
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __hash__ = _opaque
    __contains__ = __index__ = __int__ = __float__ = __str__ = __format__ = _opaque
    def __repr__(self):
        return "<candidate object>"

class RemoteIter:
    def __init__(self, r): self.r = r
    def __iter__(self): return self
    def __next__(self):
        if type(self.r) is not Remote: raise TypeError("not an iterator")
        return self.r._ask("next")

class Namespace(dict):
    """The tests' globals: a name the tests and prelude do not define comes from the candidate
    (builtins and dunders never do)."""
    def __init__(self, session):
        super().__init__(__builtins__=builtins, __name__="__test__")
        self.session = session
    def __missing__(self, name):
        if name.startswith("__") or name in vars(builtins):
            raise KeyError(name)
        value = self.session.rpc({"op": "get", "ns": self.session.ns, "name": name})
        self[name] = value
        return value

def run_case(case, worker, ns_id):
    session = Session(worker, ns_id, time.monotonic() + PER_CASE)
    try:
        session.rpc({"op": "load", "ns": ns_id, "src": case["candidate"]})
    except (WorkerDied, CaseTimeout, ProtocolError):
        raise
    except BaseException as e:
        return "fail", "load", f"{type(e).__name__}: {str(e)[:200]}"
    ns = Namespace(session)
    if case.get("prelude"):
        try:
            exec(compile(case["prelude"], "prelude.py", "exec"), ns)
        except Exception:
            for name in [k for k in ns if not k.startswith("__")]:  # half-run prelude: drop it
                del ns[name]
    ep = case.get("entry_point")
    try:
        if ep:
            try:
                ns[ep] = session.rpc({"op": "get", "ns": ns_id, "name": ep})
            except KeyError:
                return "fail", "no-entry-point", f"the candidate does not define {ep!r}"
        exec(compile(case["tests"], "tests.py", "exec"), ns)
        if ep and case.get("call_check"):
            ns["check"](ns[ep])
    except (WorkerDied, CaseTimeout, ProtocolError):
        raise
    except AssertionError as e:
        return "fail", "assertion", str(e)[:200]
    except BaseException as e:
        return "fail", "exception", f"{type(e).__name__}: {str(e)[:200]}"
    return "pass", "", ""

verdicts, worker, dirty = [], None, False
for n, case in enumerate(SPEC["cases"]):
    if worker is None or not SPEC["shared_worker"]:
        if worker is not None:
            worker.close()
        if n and not SPEC["shared_worker"] and not fresh_room():
            dirty = True  # the last case left what cannot be removed: no later case is judged
        if dirty:
            verdicts.append(("fail", "isolation", "a batch-mate left processes or files behind"))
            continue
        worker = Worker()
    try:
        verdicts.append(run_case(case, worker, n))
    except WorkerDied:
        worker.proc.wait()
        verdicts.append(("fail", "candidate-exited", f"exit status {worker.proc.returncode}"))
        worker.close(); worker = None
    except CaseTimeout:
        verdicts.append(("timeout", "case", f"over {PER_CASE} s"))
        worker.close(); worker = None
    except ProtocolError as e:
        verdicts.append(("fail", "protocol", str(e)))
        worker.close(); worker = None
if worker is not None:
    worker.close()
payload = NONCE + b"\n" + json.dumps(verdicts).encode()
while payload:
    payload = payload[os.write(RESULT_FD, payload):]
os.close(RESULT_FD)
'''

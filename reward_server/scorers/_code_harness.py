"""The programs the ``code`` scorer runs in the sandbox around a solution.

Each reads a per-run secret on stdin before any untrusted code runs, and marks its
own report lines with it, so output the solution prints is never taken for a report.
They are plain source text: each runs as the sandbox's ``main.py``, beside the
solution's ``solution.py``.
"""

# Setup, then ``assert <expression> == <literal>`` lines: the left-hand sides are
# computed next to the solution and reported as ``repr``; the expected values never
# enter the sandbox and are compared by the scorer.
VALUE_HARNESS = r"""import json, sys
def _arbiter_run():
    secret = sys.stdin.readline().strip()
    request = json.loads(sys.stdin.readline())
    namespace = {"__name__": "__main__"}
    exec(compile(open("solution.py").read(), "solution.py", "exec"), namespace)
    exec(compile(request["setup"], "tests.py", "exec"), namespace)
    for index, expression in enumerate(request["expressions"]):
        try:
            report = {"repr": repr(eval(compile(expression, "tests.py", "eval"), namespace))}
        except BaseException as exc:
            report = {"error": type(exc).__name__ + ": " + str(exc)[:200]}
        sys.stdout.write("\n" + secret + " " + str(index) + " " + json.dumps(report) + "\n")
        sys.stdout.flush()
_arbiter_run()
"""

# Function-call cases: the return value is reported as JSON and compared by the scorer.
CALL_HARNESS = r"""import json, sys
def _arbiter_run():
    secret = sys.stdin.readline().strip()
    name, args = json.loads(sys.stdin.readline())
    namespace = {"__name__": "__main__"}
    exec(compile(open("solution.py").read(), "solution.py", "exec"), namespace)
    function = namespace.get(name)
    if function is None and "Solution" in namespace:  # LeetCode style
        function = getattr(namespace["Solution"](), name, None)
    if function is None:
        raise NameError("the solution defines no function " + repr(name))
    result = json.dumps(function(*args), allow_nan=False)
    sys.stdout.write("\n" + secret + " " + result + "\n")
    sys.stdout.flush()
_arbiter_run()
"""

# Any other assert program, in two processes. The tests' process (PID 1) makes itself
# undumpable (its memory and descriptors cannot be read by a process of the same uid),
# forks the solution's process *before* it reads the secret or the tests from stdin,
# and calls the solution's functions over pipes: arguments and results cross as plain
# literals (``ast.literal_eval``), anything else as an opaque handle that can be
# called but never compared or tested for truth. The solution's process never has the
# tests, the secret or the run's stdout, and no solution code runs in the tests'
# process, so only the tests reaching their end can print the secret after them.
ASSERT_HARNESS = r'''import ast, builtins, json, os, sys


def _arbiter_solution_side(requests, replies):
    """The solution's process: runs the model's code and answers calls. It never has
    the tests, the secret, or the run's stdout."""
    objects = []
    namespace = {"__name__": "__main__"}
    reader = os.fdopen(requests, "rb")
    writer = os.fdopen(replies, "wb")

    def answer(value):
        try:
            text = repr(value)
            if len(text) <= 1 << 20:
                ast.literal_eval(text)
                return {"value": text}
        except BaseException:
            pass
        objects.append(value)
        return {"handle": len(objects) - 1}

    def decode(item):
        return objects[item["handle"]] if "handle" in item else ast.literal_eval(item["literal"])

    try:
        exec(compile(open("solution.py").read(), "solution.py", "exec"), namespace)
        loaded = None
    except BaseException as exc:
        loaded = type(exc).__name__ + ": " + str(exc)[:300]
    for line in reader:
        request = json.loads(line)
        try:
            if loaded is not None:
                reply = {"error": "the solution failed to load: " + loaded}
            elif request["op"] == "name":
                name = request["name"]
                reply = answer(namespace[name]) if name in namespace else {"missing": True}
            else:
                target = objects[request["target"]]
                if request["op"] == "getattr":
                    reply = answer(getattr(target, request["name"]))
                else:
                    args = [decode(item) for item in request["args"]]
                    kwargs = {key: decode(item) for key, item in request["kwargs"].items()}
                    reply = answer(target(*args, **kwargs))
        except BaseException as exc:
            reply = {"raised": type(exc).__name__, "message": str(exc)[:300]}
        writer.write((json.dumps(reply) + "\n").encode())
        writer.flush()
    os._exit(0)


def _arbiter_tests_side(requests, replies):
    secret = sys.stdin.readline().strip()
    request = json.loads(sys.stdin.readline())
    reader = os.fdopen(replies, "rb")
    writer = os.fdopen(requests, "wb")

    def rpc(message):
        writer.write((json.dumps(message) + "\n").encode())
        writer.flush()
        line = reader.readline(1 << 22)
        if not line.endswith(b"\n"):
            raise RuntimeError("the solution's process ended or answered too much")
        reply = json.loads(line)
        if "value" in reply:
            return ast.literal_eval(reply["value"])
        if "handle" in reply:
            return _Remote(reply["handle"])
        if reply.get("missing"):
            raise KeyError(message.get("name"))
        if "raised" in reply:
            kind = getattr(builtins, str(reply["raised"]), None)
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                kind = RuntimeError
            raise kind(str(reply.get("message", "")))
        raise RuntimeError(str(reply.get("error", "no answer")))

    def encode(value):
        if isinstance(value, _Remote):
            return {"handle": value._arbiter_handle}
        text = repr(value)
        if ast.literal_eval(text) != value:
            raise TypeError("only plain values can be passed to the solution")
        return {"literal": text}

    class _Remote:
        """Something of the solution's that is not a plain value: it can be called and
        its attributes read; it has no truth value and equals nothing."""

        def __init__(self, handle):
            object.__setattr__(self, "_arbiter_handle", handle)

        def __call__(self, *args, **kwargs):
            return rpc({"op": "call", "target": self._arbiter_handle, "args": [encode(a) for a in args],
                        "kwargs": {k: encode(v) for k, v in kwargs.items()}})

        def __getattr__(self, name):
            return rpc({"op": "getattr", "target": self._arbiter_handle, "name": name})

        def _refuse(self, *args):
            raise TypeError("a solution object that is not a plain value cannot be compared")

        __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse
        __hash__ = object.__hash__

        def __repr__(self):
            return "<solution object>"

    namespace = {"__name__": "__main__"}
    for name in request["remote"]:
        try:
            namespace[name] = rpc({"op": "name", "name": name})
        except KeyError:
            pass
    del request["remote"]
    exec(compile(request["tests"], "tests.py", "exec"), namespace)
    sys.stdout.write("\n" + secret + "\n")
    sys.stdout.flush()


def _arbiter_main():
    try:
        import ctypes
        undumpable = ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE 0
    except Exception as exc:
        undumpable, why = False, exc
    else:
        why = "prctl failed"
    if not undumpable:  # the solution could read the secret from this process: refuse
        raise SystemExit(f"arbiter: cannot protect the tests' process (PR_SET_DUMPABLE): {why}")
    to_solution = os.pipe()
    to_tests = os.pipe()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(to_solution[1])
        os.close(to_tests[0])
        _arbiter_solution_side(to_solution[0], to_tests[1])
    os.close(to_solution[0])
    os.close(to_tests[1])
    _arbiter_tests_side(to_solution[1], to_tests[0])


_arbiter_main()
'''

"""Drives a running shakedown with the unchanged toxiproxy-python client
(PyPI toxiproxy-python 0.1.1), as a user's test suite would.

Usage: python toxiproxy_python_test.py --host 127.0.0.1 --port 8474

It starts its own TCP echo server, then goes through the client's whole
public API: running/version, create (and the duplicate check), proxies and
get_proxy, toxics (add, list, get, measure, remove, invalid type), disable,
enable and the `down()` context, reset, populate, destroy. Every check that
fails prints what was expected and what came back, and the script exits 1.
Run by tests/toxiproxy_python.rs.
"""

import argparse
import json
import socket
import socketserver
import sys
import threading
import time

from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

# Latencies large enough to stand out from loopback noise on a busy CI
# machine, small enough to keep the run short.
DOWN_LATENCY_MS = 300
UP_LATENCY_MS = 200
# A round trip with no toxic must be well under the smallest latency.
FAST_S = 0.2
# Generous upper bound: a latency toxic must delay, not hang.
SLOW_LIMIT_S = 5.0
# Socket operations never wait longer than this.
IO_TIMEOUT_S = 10.0

STEP = ["start"]


def step(name):
    STEP[0] = name
    print("--", name, flush=True)


def fail(msg):
    print("FAILED in step '%s': %s" % (STEP[0], msg), flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def check_eq(got, want, what):
    if got != want:
        fail("%s: expected %r, got %r" % (what, want, got))


def expect_raises(exc_type, fn, what):
    try:
        fn()
    except exc_type:
        return
    except Exception as e:  # noqa: BLE001 - report whatever came instead
        fail("%s: expected %s, got %s: %s" % (what, exc_type.__name__, type(e).__name__, e))
    fail("%s: expected %s, nothing was raised" % (what, exc_type.__name__))


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def split_addr(listen):
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def round_trip(listen, payload=b"ping through shakedown"):
    """Seconds from sending `payload` to having it all back, on a new
    connection through the proxy."""
    with socket.create_connection(split_addr(listen), timeout=IO_TIMEOUT_S) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                fail("the proxy closed the connection after %r" % got)
            got += chunk
        elapsed = time.monotonic() - start
    check_eq(got, payload, "echoed bytes")
    return elapsed


def refused(listen):
    try:
        socket.create_connection(split_addr(listen), timeout=IO_TIMEOUT_S).close()
    except ConnectionRefusedError:
        return True
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    echo = EchoServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    upstream = "127.0.0.1:%d" % echo.server_address[1]

    tp = Toxiproxy()
    tp.update_api_consumer(args.host, args.port)

    step("running and version")
    check(tp.running() is True, "running() is not True")
    raw = tp.version()
    check_eq(json.loads(raw), {"version": "2.12.0"}, "version() body")

    step("start empty")
    tp.destroy_all()
    check_eq(tp.proxies(), {}, "proxies() after destroy_all()")

    step("create")
    proxy = tp.create(upstream=upstream, name="py_echo")
    check_eq(proxy.name, "py_echo", "created proxy name")
    check_eq(proxy.upstream, upstream, "created proxy upstream")
    check(proxy.enabled is True, "created proxy enabled: %r" % proxy.enabled)
    host, port = split_addr(proxy.listen)
    check(host == "127.0.0.1" and port != 0, "listen not resolved: %r" % proxy.listen)
    listen = proxy.listen
    expect_raises(ProxyExists, lambda: tp.create(upstream=upstream, name="py_echo"), "create twice")

    step("list and get")
    all_proxies = tp.proxies()
    check_eq(sorted(all_proxies), ["py_echo"], "proxies() names")
    listed = all_proxies["py_echo"]
    check_eq((listed.listen, listed.upstream, listed.enabled), (listen, upstream, True), "listed proxy")
    got = tp.get_proxy("py_echo")
    check(got is not None, "get_proxy('py_echo') is None")
    check_eq((got.name, got.listen), ("py_echo", listen), "get_proxy")
    check(tp.get_proxy("nope") is None, "get_proxy('nope') is not None")

    step("relay without toxics")
    fast = round_trip(listen)
    check(fast < FAST_S, "round trip without toxics took %.3f s" % fast)

    step("latency toxic")
    check_eq(proxy.toxics(), {}, "toxics() before adding")
    proxy.add_toxic(type="latency", attributes={"latency": DOWN_LATENCY_MS})
    toxics = proxy.toxics()
    check_eq(sorted(toxics), ["latency_downstream"], "toxic names")
    t = proxy.get_toxic("latency_downstream")
    check(t is not None, "get_toxic('latency_downstream') is None")
    check_eq((t.type, t.stream, t.toxicity), ("latency", "downstream", 1), "toxic fields")
    check_eq(t.attributes, {"latency": DOWN_LATENCY_MS, "jitter": 0}, "toxic attributes")
    check(proxy.get_toxic("nope") is None, "get_toxic('nope') is not None")
    slow = round_trip(listen)
    check(
        DOWN_LATENCY_MS / 1000.0 <= slow < SLOW_LIMIT_S,
        "round trip with %d ms downstream latency took %.3f s" % (DOWN_LATENCY_MS, slow),
    )

    step("second toxic, upstream")
    proxy.add_toxic(
        name="lat_up",
        type="latency",
        stream="upstream",
        toxicity=1.0,
        attributes={"latency": UP_LATENCY_MS},
    )
    t = proxy.get_toxic("lat_up")
    check(t is not None, "get_toxic('lat_up') is None")
    check_eq((t.type, t.stream), ("latency", "upstream"), "upstream toxic fields")
    both = round_trip(listen)
    want = (DOWN_LATENCY_MS + UP_LATENCY_MS) / 1000.0
    check(want <= both < SLOW_LIMIT_S, "round trip with both latencies took %.3f s, want >= %.3f" % (both, want))

    step("invalid toxic and missing toxic")
    expect_raises(InvalidToxic, lambda: proxy.add_toxic(type="no_such_toxic"), "add_toxic(bad type)")
    expect_raises(ProxyExists, lambda: proxy.add_toxic(type="latency"), "add_toxic(same name twice)")
    expect_raises(NotFound, lambda: proxy.destroy_toxic("nope"), "destroy_toxic('nope')")

    step("remove toxics")
    check(proxy.destroy_toxic("latency_downstream") is True, "destroy_toxic(latency_downstream) not True")
    check(proxy.destroy_toxic("lat_up") is True, "destroy_toxic(lat_up) not True")
    check_eq(proxy.toxics(), {}, "toxics() after removal")
    fast = round_trip(listen)
    check(fast < FAST_S, "round trip after removing the toxics took %.3f s" % fast)

    step("disable and enable")
    proxy.disable()
    check(proxy.enabled is False, "proxy.enabled after disable()")
    check(tp.get_proxy("py_echo").enabled is False, "server still shows the proxy enabled")
    check(refused(listen), "connection accepted while the proxy is disabled")
    proxy.enable()
    check(tp.get_proxy("py_echo").enabled is True, "server shows the proxy disabled after enable()")
    round_trip(listen)

    step("down() context")
    with proxy.down():
        check(refused(listen), "connection accepted inside proxy.down()")
    round_trip(listen)

    step("reset")
    proxy.add_toxic(type="latency", attributes={"latency": DOWN_LATENCY_MS})
    proxy.disable()
    check(tp.reset() is True, "reset() not True")
    after = tp.get_proxy("py_echo")
    check(after.enabled is True, "reset() did not re-enable the proxy")
    check_eq(after.listen, listen, "listen after reset")
    check_eq(proxy.toxics(), {}, "toxics() after reset()")
    fast = round_trip(listen)
    check(fast < FAST_S, "round trip after reset took %.3f s" % fast)

    step("populate")
    spec = [{"name": "py_pop", "upstream": upstream, "listen": "127.0.0.1:0"}]
    created = tp.populate(spec)
    check_eq([p.name for p in created], ["py_pop"], "populate() created")
    pop_listen = created[0].listen
    round_trip(pop_listen)
    spec[0]["listen"] = pop_listen
    check_eq(tp.populate(spec), [], "populate() of an unchanged proxy")
    check_eq(sorted(tp.proxies()), ["py_echo", "py_pop"], "proxies() after populate()")

    step("destroy")
    check(tp.destroy(proxy) is True, "destroy(proxy) not True")
    check_eq(sorted(tp.proxies()), ["py_pop"], "proxies() after destroy()")
    check(refused(listen), "connection accepted after destroy()")
    expect_raises(NotFound, proxy.destroy, "destroying a destroyed proxy")
    tp.destroy_all()
    check_eq(tp.proxies(), {}, "proxies() after destroy_all()")

    echo.shutdown()
    print("OK: toxiproxy-python drove shakedown through every step", flush=True)


if __name__ == "__main__":
    main()

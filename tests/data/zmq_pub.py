"""A ZMQ PUB socket (pyzmq, so libzmq) standing in for the Canadian radars' publisher, for
tests/radar_zmq.rs.

Usage: zmq_pub.py [PORT]  (no PORT: a random free port). Binds tcp://127.0.0.1:PORT and prints
the port on stdout. Then reads stdin: each line is one multipart message, its parts separated by
spaces, each part hex bytes, or `z:` + hex to send the bytes zlib-compressed; an empty line ends
a batch, which replaces the messages being sent. The current batch is sent again every 100 ms
(a SUB socket joins late: it misses what was sent before its subscription arrived), until
stdin closes, then it exits.
"""

import sys
import threading
import time
import zlib

import zmq


def part(text):
    if text.startswith("z:"):
        return zlib.compress(bytes.fromhex(text[2:]))
    return bytes.fromhex(text)


def main():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    if len(sys.argv) > 1:
        port = int(sys.argv[1])
        pub.bind(f"tcp://127.0.0.1:{port}")
    else:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)

    lock = threading.Lock()
    state = {"batch": [], "open": True}

    def read_stdin():
        pending = []
        for line in sys.stdin:
            line = line.strip()
            if line:
                pending.append([part(p) for p in line.split(" ")])
            else:
                with lock:
                    state["batch"] = pending
                pending = []
        with lock:
            state["open"] = False

    threading.Thread(target=read_stdin, daemon=True).start()
    while True:
        with lock:
            if not state["open"]:
                break
            batch = list(state["batch"])
        for message in batch:
            pub.send_multipart(message)
        time.sleep(0.1)
    pub.close()
    ctx.term()


if __name__ == "__main__":
    main()

"""Bounded loopback load test: `magma serve` in a subprocess, 16 concurrent clients, no errors."""
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from serve.client.http import PolicyClient, encode_image

pytestmark = pytest.mark.slow
DURATION_S = 20.0
CLIENTS = 16


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sixteen_clients_no_errors(tiny_checkpoint):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    server = subprocess.Popen([sys.executable, "-m", "magma.cli", "serve", "--checkpoint", str(tiny_checkpoint),
                               "--host", "127.0.0.1", "--port", str(port), "--token", "t0k", "--chunk", "2",
                               "--timeout", "300"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = PolicyClient(f"http://127.0.0.1:{port}", token="t0k", timeout=60)
        deadline = time.time() + 120
        while True:
            try:
                client.healthz()
                break
            except Exception:
                assert server.poll() is None, server.stdout.read()[-2000:]
                assert time.time() < deadline, "server did not start"
                time.sleep(0.5)
        image = encode_image(np.random.RandomState(0).randint(0, 255, (120, 160, 3), np.uint8))
        warm = {"adapter": "robot", "instruction": "warm up", "image": image}
        for _ in range(2):  # first calls pay one-off kernel set-up; keep them out of the numbers
            client.act(warm)
        latencies, errors = [], []
        stop_at = time.time() + DURATION_S

        def worker(i):
            c = PolicyClient(f"http://127.0.0.1:{port}", token="t0k", timeout=60)
            while time.time() < stop_at:
                t0 = time.perf_counter()
                try:
                    r = c.act({"adapter": "robot", "instruction": f"task {i}", "image": image,
                               "proprio": [0.1 * i]})
                    assert len(r["chunk"]) == 2 and r["tokens"] == 8
                    latencies.append(time.perf_counter() - t0)
                except Exception as exc:
                    errors.append(repr(exc))
            c.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p50, p99 = np.percentile(latencies, [50, 99])
        print(f"\nload: {len(latencies)} requests in {DURATION_S:.0f} s from {CLIENTS} clients, "
              f"{len(latencies) / DURATION_S:.1f} req/s, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        assert not errors, errors[:3]
        assert len(latencies) >= CLIENTS
        assert client.healthz()["status"] == "ok"
    finally:
        server.terminate()  # SIGTERM: graceful shutdown
        try:
            assert server.wait(timeout=30) == 0 or server.returncode is not None
        finally:
            if server.poll() is None:
                server.kill()

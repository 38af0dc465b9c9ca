"""The simulator's control endpoints validate what they are sent (issue 15, Simulator): a bad fault spec,
step request or body length gets HTTP 400 at once, and the server keeps answering."""

from __future__ import annotations

import socket

import pytest
import requests
from click.testing import CliRunner

from cdc_cli.cli import main
from ingest.sim import SimServer

BAD_FAULTS = [
    None,
    {"delay_s": 1e9},  # would hold a request thread for 31 years
    {"delay_s": -1},
    {"delay_s": "3"},
    {"delay_s": 61},
    {"count": "x"},
    {"count": 0},
    {"count": -5},
    {"count": 1.5},
    {"count": True, "status": 500},
    {"status": True},
    {"status": 200},
    {"status": "500"},
    {"status": 429, "retry_after": -1},
    {"status": 429, "retry_after": "soon"},
    {"status": 500, "path": 7},
    {"status": 500, "path": "api"},
    {"malformed": "yes"},
    {"unknown_symbol": ["BTCUSDT"]},
    {"unknown_symbol": "not a symbol!"},
    {},  # does nothing
    {"nonsense": 1},
]


@pytest.fixture(scope="module")
def sim():
    with SimServer(symbols=5, seed=1, tick_s=0) as server:
        yield server


def post(sim, path: str, json) -> requests.Response:
    return requests.post(f"{sim.url}{path}", json=json, timeout=5)


def still_serving(sim) -> bool:
    return requests.get(f"{sim.url}/api/v3/ticker/24hr", params={"symbol": "BTCUSDT"}, timeout=5).status_code == 200


@pytest.mark.parametrize("spec", BAD_FAULTS, ids=repr)
def test_a_bad_fault_spec_gets_400_and_nothing_is_installed(sim, spec):
    response = post(sim, "/__sim/faults", spec)
    assert response.status_code == 400 and "bad control request" in response.json()["msg"]
    assert requests.get(f"{sim.url}/__sim/faults", timeout=5).json() == {"faults": [], "unknown_symbols": []}
    assert still_serving(sim)


def test_valid_fault_specs_are_accepted_and_an_unbounded_one_beside_them_is_not(sim):
    valid = [{"status": 500, "count": 2}, {"delay_s": 0.01}, {"malformed": True},
             {"status": 418, "retry_after": 120, "path": "/api/v3/depth"}, {"unknown_symbol": "ETHUSDT"}]
    try:
        assert [post(sim, "/__sim/faults", spec).status_code for spec in valid] == [200] * len(valid)
        assert post(sim, "/__sim/faults", {"status": 500, "delay_s": 3600}).status_code == 400
    finally:
        requests.delete(f"{sim.url}/__sim/faults", timeout=5)


@pytest.mark.parametrize("body", [{"steps": 10**9}, {"steps": 0}, {"steps": "2"}, {"symbols": "BTCUSDT"},
                                  {"symbols": [1]}, [1]], ids=repr)
def test_a_bad_step_request_gets_400_and_never_holds_the_market(sim, body):
    assert post(sim, "/__sim/step", body).status_code == 400
    assert still_serving(sim)


@pytest.mark.parametrize("length", ["-1", "abc", str(10**12)])
def test_a_bad_content_length_gets_400_without_waiting_for_the_body(sim, length):
    host, port = sim.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(f"POST /__sim/faults HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode())
        answer = conn.recv(65536)  # socket timeout 5 s: a server waiting for the body fails the test
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert still_serving(sim)


def test_a_bad_fault_option_is_a_usage_error():
    result = CliRunner().invoke(main, ["binance-sim", "--port", "0", "--fault", '{"delay_s": 1e9}'])
    assert result.exit_code == 2 and "delay_s" in result.output

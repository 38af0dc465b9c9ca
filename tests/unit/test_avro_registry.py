"""The schema-registry client against a real HTTP server on 127.0.0.1 serving the captured schemas."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cdc_consumer.avro import AvroDecoder
from cdc_consumer.errors import RegistryUnavailable, UnknownSchemaId
from cdc_consumer.render import event_to_json
from cdc_consumer.schema_registry import RegistryClient, SchemaFile
from tests.unit.debezium_records import AVRO, avro_bytes, avro_schemas_path, records


class Registry:
    """Confluent's `GET /schemas/ids/{id}` over the schemas file; can be told to fail the next requests."""

    def __init__(self) -> None:
        schemas = json.loads(avro_schemas_path().read_text())["schemas_by_id"]
        self.schemas = {int(sid): json.dumps(schema) for sid, schema in schemas.items()}
        self.requests: list[str] = []
        self.fail_next = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self):
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                registry.requests.append(self.path)
                match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
                if registry.fail_next:
                    registry.fail_next -= 1
                    return self._answer(500, {"error_code": 50001, "message": "store unavailable"})
                if match and int(match.group(1)) in registry.schemas:
                    return self._answer(200, {"schema": registry.schemas[int(match.group(1))]})
                return self._answer(404, {"error_code": 40403, "message": "Schema not found"})

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture()
def registry():
    served = Registry()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()
    thread.join(timeout=10)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def avro_lines():
    return [(r["topic"], avro_bytes(r["key"]), avro_bytes(r["value"])) for r in records(AVRO)]


def test_the_capture_decodes_through_the_registry_asking_each_id_once(registry):
    over_http, from_file = AvroDecoder(RegistryClient(registry.url)), AvroDecoder(SchemaFile(avro_schemas_path()))
    for topic, key, value in avro_lines() * 2:
        assert event_to_json(over_http.decode(topic, key, value)) == event_to_json(from_file.decode(topic, key, value))
    assert len(registry.requests) == len(set(registry.requests))  # no id asked twice
    assert set(registry.requests) == {f"/schemas/ids/{sid}" for sid in registry.schemas}


def test_a_registry_url_is_enough_to_build_the_decoder(registry):
    topic, key, value = avro_lines()[7]
    assert AvroDecoder(registry.url).decode(topic, key, value).key["symbol"] == "BNBUSDT"


def test_an_id_the_registry_does_not_know_is_unknown_schema_id(registry):
    with pytest.raises(UnknownSchemaId, match="has no schema 4242"):
        RegistryClient(registry.url).schema(4242)


def test_an_unreachable_registry_is_a_decode_error_naming_the_record():
    topic, key, value = avro_lines()[7]
    decoder = AvroDecoder(RegistryClient(f"http://127.0.0.1:{closed_port()}", timeout=2))
    with pytest.raises(RegistryUnavailable, match="unreachable") as caught:
        decoder.decode(topic, key, value, None, 0, 17)
    assert (caught.value.topic, caught.value.offset) == (topic, 17)


def test_a_failing_registry_is_asked_again_once_it_recovers(registry):
    client = RegistryClient(registry.url)
    registry.fail_next = 1
    with pytest.raises(RegistryUnavailable, match="HTTP 500"):
        client.schema(2)
    assert client.schema(2)["name"] == "Envelope"
    assert registry.requests == ["/schemas/ids/2", "/schemas/ids/2"]

"""`cdc decode --input`: one exact JSON object per record; bad records print an error and the exit is 1."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cdc_cli.cli import main
from tests.unit.debezium_records import (
    AVRO,
    PRECISE,
    avro_schemas_path,
    debezium_dir,
    headers,
    records,
)


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, ["decode", *args], input=stdin)


def lines_of(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_main_capture_prints_one_exact_object_per_record():
    result = run("--input", str(debezium_dir() / f"{PRECISE}.ndjson"))
    assert result.exit_code == 0, result.output
    docs = lines_of(result)
    assert len(docs) == len(records(PRECISE)) == 35
    bnb = docs[7]
    assert bnb["op"] == "c" and bnb["before"] is None
    assert bnb["key"] == {"symbol": "BNBUSDT", "event_time": "2024-01-02T10:00:00.500000Z"}
    assert bnb["after"]["price_change"] == "-0.00000001"
    assert bnb["after"]["last_price"] == "0.00000000"
    assert bnb["after"]["quote_volume"] == "9999999999999999999999.99999999"
    assert bnb["source"] == {"ts_us": 1795268902999953, "lsn": 29689288, "txId": 1105, "snapshot": "false",
                             "db": "crypto_db", "schema": "public", "table": "ticker_24h"}


def test_types_print_as_documented():
    docs = lines_of(run("--input", str(debezium_dir() / f"{PRECISE}.ndjson")))
    zoo = docs[4]["after"]
    assert zoo["d"] == "2024-02-29"
    assert zoo["ts"] == "2024-02-29T12:34:56.789012Z"
    assert zoo["tstz"] == "2024-02-29T07:04:56.789012Z"
    assert zoo["t"] == "23:59:59.999999"
    assert zoo["iv"] == "PT37091106.500000S"
    assert zoo["bin"] == "3q2+7wD/"
    assert zoo["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert zoo["big_col"] == 9007199254740993
    assert docs[24]["after"]["dbl"] == "NaN" and docs[24]["after"]["real_col"] == "Infinity"
    assert docs[23]["after"]["tstz"] == "0001-01-01T00:00:00.000000Z"


def test_tombstone_toast_and_truncate_records():
    docs = lines_of(run("--input", str(debezium_dir() / f"{PRECISE}.ndjson")))
    assert docs[11] == {"topic": "crypto.public.ticker_24h", "op": None,
                        "key": {"symbol": "ETHUSDT", "event_time": "2024-01-01T00:00:00.000000Z"}, "tombstone": True}
    assert docs[32]["after"]["payload"] == "__debezium_unavailable_value"
    assert docs[34]["op"] == "t" and docs[34]["key"] is None


def test_headers_in_the_input_show_the_primary_key_change(tmp_path):
    path = tmp_path / "with_headers.ndjson"
    with path.open("w") as out:
        for record, record_headers in zip(records(PRECISE)[10:13], headers()[10:13]):
            out.write(json.dumps({**record, "headers": [[k, v.decode()] for k, v in record_headers]}) + "\n")
    delete, tombstone, create = lines_of(run("--input", str(path)))
    assert delete["newkey"] == {"symbol": "ETHBUSD", "event_time": "2024-01-01T00:00:00.000000Z"}
    assert tombstone["newkey"] == delete["newkey"]
    assert create["oldkey"] == {"symbol": "ETHUSDT", "event_time": "2024-01-01T00:00:00.000000Z"}


def test_avro_with_a_schemas_file_prints_the_same_rows_as_json():
    from_avro = lines_of(run("--input", str(debezium_dir() / f"{AVRO}.ndjson"), "--format", "avro",
                             "--schemas", str(avro_schemas_path())))
    from_json = lines_of(run("--input", str(debezium_dir() / f"{PRECISE}.ndjson")))
    assert len(from_avro) == 34
    for avro_doc, json_doc in zip(from_avro, from_json):
        for field in ("topic", "op", "key", "before", "after", "tombstone"):
            assert avro_doc.get(field) == json_doc.get(field), field


def test_reads_stdin_and_stops_after_max():
    text = (debezium_dir() / f"{PRECISE}.ndjson").read_text()
    result = run("--input", "-", "--max", "3", stdin=text)
    assert result.exit_code == 0
    assert [d["key"]["symbol"] for d in lines_of(result)] == ["BTCUSDT", "ETHUSDT", "BTCUSDT"]


def test_an_undecodable_record_prints_an_error_line_and_the_rest_still_decode(tmp_path):
    good = records(PRECISE)[7]
    bad_base64 = {**good, "value": good["value"].replace('"high_price":"BWvHXi1jD///"', '"high_price":"BWvHXi1jD//"')}
    path = tmp_path / "mixed.ndjson"
    path.write_text("\n".join([json.dumps(good), "not json at all", json.dumps(bad_base64),
                               json.dumps({"topic": "t", "key": None, "value": "{nope"}), json.dumps(good)]) + "\n")
    result = run("--input", str(path))
    assert result.exit_code == 1
    docs = lines_of(result)
    assert len(docs) == 5
    assert docs[0]["after"]["symbol"] == docs[4]["after"]["symbol"] == "BNBUSDT"
    assert list(docs[1]) == ["error"] and "line 2" in docs[1]["error"]
    assert "after.high_price" in docs[2]["error"] and "Incorrect padding" in docs[2]["error"]
    assert "not valid JSON" in docs[3]["error"]
    assert "3 record(s) could not be decoded" in result.stderr


def test_avro_records_that_are_not_base64_or_not_wire_format_are_errors(tmp_path):
    path = tmp_path / "bad.ndjson"
    path.write_text(json.dumps({"topic": "t", "key": None, "value": "%%%"}) + "\n"
                    + json.dumps({"topic": "t", "key": None, "value": "BQAAAAE="}) + "\n")
    result = run("--input", str(path), "--format", "avro", "--schemas", str(avro_schemas_path()))
    assert result.exit_code == 1
    first, second = lines_of(result)
    assert "value is not base64" in first["error"]
    assert "unknown magic byte 0x05" in second["error"]


def test_usage_errors_exit_2():
    assert run().exit_code == 2
    assert run("--input", "-", "--topic", "t").exit_code == 2
    assert run("--input", "-", "--from-beginning").exit_code == 2
    assert run("--input", "-", "--max", "0").exit_code == 2
    assert run("--input", "/no/such/file").exit_code == 2
    bad_schemas = run("--input", "-", "--format", "avro", "--schemas", str(debezium_dir() / f"{PRECISE}.ndjson"))
    assert bad_schemas.exit_code == 2 and "schemas_by_id" in bad_schemas.output

"""An independent client: confluent-kafka (librdkafka) + fastavro, knowing
nothing of autotrain but the published .avsc files.

    avro_client.py produce BOOTSTRAP TOPIC SCHEMA_DIR   # writes bars, prints them as JSON lines
    avro_client.py consume BOOTSTRAP TOPIC SCHEMA_DIR N # reads N records, prints them decoded

Records use Avro single-object encoding: C3 01, the 8-byte CRC-64-AVRO
fingerprint of the writer schema (little-endian), then the binary datum.
"""

import io
import json
import sys

import fastavro
from confluent_kafka import Consumer, Producer
from fastavro.schema import fingerprint, to_parsing_canonical_form


def load(schema_dir, name):
    with open(f"{schema_dir}/{name}.avsc") as f:
        raw = json.load(f)
    parsed = fastavro.parse_schema(raw)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
    return parsed, fp


def produce(bootstrap, topic, schema_dir):
    schema, fp = load(schema_dir, "bar")
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(3):
        bar = {
            "exchange": "pyexchange",
            "symbol": "PYUSD",
            "timeframe": "1h",
            "ts": 1_600_000_000_000 + i * 3_600_000,
            "open": 1.5 + i,
            "high": 2.25 + i,
            "low": 1.0 + i,
            "close": 2.0 + i,
            "volume": 1234.5,
            "source": "python-fastavro",
            "checksum": None,
            "revision": 0,
        }
        buf = io.BytesIO()
        buf.write(b"\xc3\x01" + fp)
        fastavro.schemaless_writer(buf, schema, bar)
        p.produce(topic, key=b"pyexchange:PYUSD", value=buf.getvalue())
        print(json.dumps(bar), flush=True)
    p.flush(30)


def consume(bootstrap, topic, schema_dir, n):
    schema, fp = load(schema_dir, "bar")
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "python-interop",
        "auto.offset.reset": "earliest",
    })
    c.subscribe([topic])
    got = 0
    while got < n:
        m = c.poll(30)
        if m is None:
            sys.exit(f"timed out after {got} of {n} records")
        if m.error():
            continue
        value = m.value()
        assert value[:2] == b"\xc3\x01", "single-object marker"
        assert value[2:10] == fp, f"writer fingerprint {value[2:10].hex()} != bar.avsc {fp.hex()}"
        record = fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)
        # timestamp-millis arrives as a datetime; print it as epoch millis.
        record["ts"] = round(record["ts"].timestamp() * 1000)
        headers = dict(m.headers() or [])
        record["_event_id"] = headers.get("event_id", b"").decode()
        print(json.dumps(record), flush=True)
        got += 1
    c.close()


if __name__ == "__main__":
    cmd, bootstrap, topic, schema_dir = sys.argv[1:5]
    if cmd == "produce":
        produce(bootstrap, topic, schema_dir)
    else:
        consume(bootstrap, topic, schema_dir, int(sys.argv[5]))

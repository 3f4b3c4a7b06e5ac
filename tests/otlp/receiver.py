"""A real OTLP/HTTP trace receiver for tests/otlp_traces.rs, on the official protobuf
definitions of OpenTelemetry (PyPI opentelemetry-proto).

Listens on 127.0.0.1, port 0 (the port it got is the first line on stdout). Every POST
/v1/traces body is decoded as an ExportTraceServiceRequest and answered with an empty
ExportTraceServiceResponse (application/x-protobuf); a body that does not decode gets 400.
Each span becomes a JSON line of OUT_DIR/spans.jsonl (service name, name, trace id, span id,
parent span id, kind, status, start and end in ns, attributes); the raw bodies are appended to
OUT_DIR/raw.bin, so that a test can look for a value in every byte received. It stops on
SIGTERM or when its stdin closes.

Usage: python3 receiver.py OUT_DIR
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

OUT = sys.argv[1]
LOCK = threading.Lock()


def value(v):
    """An AnyValue as plain JSON."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(body)
        except Exception as e:  # a body that is not the message
            self.send_error(400, str(e))
            return
        lines = []
        for rs in req.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(json.dumps({
                        "service": resource.get("service.name"),
                        "resource": resource,
                        "scope": ss.scope.name,
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "kind": s.kind,
                        "status": s.status.code,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attributes": attributes(s.attributes),
                        "events": len(s.events),
                    }))
        with LOCK:
            with open(os.path.join(OUT, "raw.bin"), "ab") as f:
                f.write(body)
            with open(os.path.join(OUT, "spans.jsonl"), "a") as f:
                for line in lines:
                    f.write(line + "\n")
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    # Ends with the test: when stdin closes (the test's end, or its crash).
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()

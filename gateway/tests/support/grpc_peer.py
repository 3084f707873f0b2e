"""A real gRPC server and client for the gateway's gRPC tests (gateway/tests/grpc.rs), on grpcio
with generic handlers that take and give raw bytes, so no .proto file or code generation is needed.

server NAME [--cert PEM --key PEM]
    Serves test.Echo on 127.0.0.1 (a free port; TLS with the certificate given), prints
    "PORT <n>" once serving, then one JSON line per call: {"method", "authority", "metadata",
    "requests"}. Methods:
      Unary         answers "NAME:<request>", with trailing metadata x-served-by: NAME; request
                    metadata x-delay-ms delays the answer that long
      ServerStream  answers N messages "NAME:<i>", N being the request (a number), x-gap-ms apart
      ClientStream  answers "NAME:<the requests joined by ','>"; logs spread_ms, the time from the
                    first request message's arrival to the last's
      Fail          aborts with FAILED_PRECONDITION "precondition failed: <request>" and trailing
                    metadata x-detail: why
      Flaky         the first call with a given request aborts with UNAVAILABLE, later ones
                    answer "NAME:<request>"
client TARGET AUTHORITY METHOD [--ca PEM] [--timeout S] [--gap-ms MS] [--meta K=V]... MESSAGE...
    Calls test.Echo/METHOD on TARGET with AUTHORITY as :authority (h2c, or TLS trusting the CA),
    streamed request messages MS apart, and prints one JSON line: {"code", "details",
    "responses", "arrivals_ms" (each response's arrival since the call began), "initial",
    "trailing"}.
"""

import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "test.Echo"


def metadata_dict(md):
    out = {}
    for k, v in md or ():
        out[k] = v.decode("latin-1") if isinstance(v, bytes) else v
    return out


def serve(args):
    name = args.name
    lock = threading.Lock()

    def log(method, context, requests, **extra):
        host = getattr(context._rpc_event.call_details, "host", b"")
        line = json.dumps(
            {
                "method": method,
                "authority": host.decode("latin-1") if isinstance(host, bytes) else host,
                "metadata": metadata_dict(context.invocation_metadata()),
                "requests": [r.decode("latin-1") for r in requests],
                **extra,
            }
        )
        with lock:
            print(line, flush=True)

    def unary(request, context):
        log("Unary", context, [request])
        md = metadata_dict(context.invocation_metadata())
        delay = int(md.get("x-delay-ms", "0"))
        if delay:
            time.sleep(delay / 1000)
        context.set_trailing_metadata((("x-served-by", name),))
        return f"{name}:".encode() + request

    def server_stream(request, context):
        log("ServerStream", context, [request])
        md = metadata_dict(context.invocation_metadata())
        gap = int(md.get("x-gap-ms", "0")) / 1000
        for i in range(int(request.decode())):
            if i and gap:
                time.sleep(gap)
            yield f"{name}:{i}".encode()

    def client_stream(request_iterator, context):
        requests, arrivals = [], []
        for r in request_iterator:
            requests.append(r)
            arrivals.append(time.monotonic())
        spread = int((arrivals[-1] - arrivals[0]) * 1000) if arrivals else 0
        log("ClientStream", context, requests, spread_ms=spread)
        return f"{name}:".encode() + b",".join(requests)

    def fail(request, context):
        log("Fail", context, [request])
        context.set_trailing_metadata((("x-detail", "why"),))
        context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            "precondition failed: " + request.decode(),
        )

    flaky_seen = set()

    def flaky(request, context):
        log("Flaky", context, [request])
        with lock:
            first = request not in flaky_seen
            flaky_seen.add(request)
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return f"{name}:".encode() + request

    handlers = {
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky),
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if args.cert:
        with open(args.cert, "rb") as c, open(args.key, "rb") as k:
            creds = grpc.ssl_server_credentials(((k.read(), c.read()),))
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    # Until the test closes our stdin (or dies).
    sys.stdin.read()
    server.stop(0)


def call(args):
    options = [("grpc.default_authority", args.authority)]
    if args.ca:
        with open(args.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        options.append(("grpc.ssl_target_name_override", args.authority))
        channel = grpc.secure_channel(args.target, creds, options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=options)
    path = f"/{SERVICE}/{args.method}"
    metadata = [tuple(m.split("=", 1)) for m in args.meta]
    messages = [m.encode() for m in args.messages]
    out = {
        "code": "OK",
        "details": None,
        "responses": [],
        "arrivals_ms": [],
        "initial": {},
        "trailing": {},
    }
    began = time.monotonic()

    def got(r):
        out["responses"].append(r.decode("latin-1"))
        out["arrivals_ms"].append(int((time.monotonic() - began) * 1000))

    def paced():
        for i, m in enumerate(messages):
            if i and args.gap_ms:
                time.sleep(args.gap_ms / 1000)
            yield m

    call = None
    try:
        if args.method == "ServerStream":
            call = channel.unary_stream(path)(messages[0], metadata=metadata, timeout=args.timeout)
            for r in call:
                got(r)
        elif args.method == "ClientStream":
            r, call = channel.stream_unary(path).with_call(
                paced(), metadata=metadata, timeout=args.timeout
            )
            got(r)
        else:
            r, call = channel.unary_unary(path).with_call(
                messages[0], metadata=metadata, timeout=args.timeout
            )
            got(r)
    except grpc.RpcError as e:
        call = e
        out["code"] = e.code().name
        out["details"] = e.details()
    if call is not None:
        out["initial"] = metadata_dict(call.initial_metadata())
        out["trailing"] = metadata_dict(call.trailing_metadata())
    print(json.dumps(out), flush=True)
    channel.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("name")
    s.add_argument("--cert")
    s.add_argument("--key")
    c = sub.add_parser("client")
    c.add_argument("target")
    c.add_argument("authority")
    c.add_argument("method")
    c.add_argument("--ca")
    c.add_argument("--timeout", type=float, default=10.0)
    c.add_argument("--gap-ms", type=int, default=0)
    c.add_argument("--meta", action="append", default=[])
    c.add_argument("messages", nargs="+")
    args = p.parse_args()
    if args.mode == "server":
        serve(args)
    else:
        call(args)


if __name__ == "__main__":
    main()

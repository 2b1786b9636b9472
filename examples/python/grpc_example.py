"""gerdu through grpcio, with stubs generated from proto/gerdu.proto.

Usage: python3 examples/python/grpc_example.py PORT

Generates the Python stubs at run time (pip packages grpcio and
grpcio-tools; no protoc install; grpcio-health-checking and
grpcio-reflection for the standard services), then does what the Go Gerdu's gRPC sample
did -- Put "Hello"="World", Get it, Delete it, Get again fails with
NOT_FOUND -- and tries the additions: TTL and cas, a conditional put,
MultiGet, Increment, the Pipeline stream, health checking and server
reflection. Each answer is checked; the
script exits non-zero on the first mismatch. examples/grpc.sh starts gerdu
and runs it.
"""

import importlib
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok   {what} -> {got!r}")


def stubs():
    """Compiles proto/gerdu.proto into a temporary directory and imports it."""
    proto_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
    out = tempfile.mkdtemp(prefix="gerdu-grpc-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(proto_dir, "gerdu.proto")])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    return importlib.import_module("gerdu_pb2"), importlib.import_module("gerdu_pb2_grpc")


def code_of(call):
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


pb, rpc = stubs()
port = int(sys.argv[1])
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    grpc.channel_ready_future(channel).result(timeout=10)
    gerdu = rpc.GerduStub(channel)

    # The Go Gerdu sample.
    check("Put Hello=World", gerdu.Put(pb.PutRequest(key="Hello", value=b"World")).created, True)
    check("Get Hello", gerdu.Get(pb.GetRequest(key="Hello")).value, b"World")
    check("Delete Hello", gerdu.Delete(pb.DeleteRequest(key="Hello")).deleted, True)
    check("Get Hello again", code_of(lambda: gerdu.Get(pb.GetRequest(key="Hello"))), grpc.StatusCode.NOT_FOUND)

    # Additions.
    put = gerdu.Put(pb.PutRequest(key="session", value=b"abc", ttl_ms=60000, flags=7))
    got = gerdu.Get(pb.GetRequest(key="session"))
    check("ttl, flags and cas", (0 < got.ttl_ms <= 60000, got.flags, got.cas), (True, 7, put.cas))
    stale = pb.PutRequest(key="session", value=b"x", condition=pb.CONDITION_IF_CAS, cas=put.cas + 1000)
    check("put with a stale cas", code_of(lambda: gerdu.Put(stale)), grpc.StatusCode.ABORTED)
    absent = pb.PutRequest(key="session", value=b"x", condition=pb.CONDITION_IF_ABSENT)
    check("put if absent on a present key", code_of(lambda: gerdu.Put(absent)), grpc.StatusCode.ALREADY_EXISTS)
    entries = gerdu.MultiGet(pb.MultiGetRequest(keys=["session", "nope"])).entries
    check("MultiGet", [(e.key, e.found) for e in entries], [("session", True), ("nope", False)])
    check("Increment", gerdu.Increment(pb.IncrementRequest(key="hits", delta=5)).value, 5)
    ops = [pb.Operation(id=i, put=pb.PutRequest(key=f"k{i}", value=b"v")) for i in range(100)]
    ops += [pb.Operation(id=100 + i, get=pb.GetRequest(key=f"k{i}")) for i in range(100)]
    results = list(gerdu.Pipeline(iter(ops)))
    check("Pipeline: 200 results, ids in order", [r.id for r in results] == list(range(200)), True)
    check("Pipeline: all OK", {r.status.code for r in results}, {0})
    check("ClusterStatus role", gerdu.ClusterStatus(pb.ClusterStatusRequest()).role, "leader")

    # The standard services, with grpcio's own clients (pip grpcio-health-checking,
    # grpcio-reflection): what probes and grpcurl use.
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="gerdu.Gerdu")).status
    check("health of gerdu.Gerdu", status, health_pb2.HealthCheckResponse.SERVING)
    reflection = ProtoReflectionDescriptorDatabase(channel)
    check("reflection lists gerdu.Gerdu", "gerdu.Gerdu" in reflection.get_services(), True)
    method = reflection.FindFileContainingSymbol("gerdu.Gerdu").service[0].method[0].name
    check("reflection describes the service", method, "Put")
print("grpc python example: all checks passed")

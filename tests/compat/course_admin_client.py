#!/usr/bin/env python3
"""A client of the course project's admin protocol, built only from the
protocol as the course defines it (package `tritontube`, service
`VideoContentAdminService`), to show that a non-Rust client of that protocol
works against TritonTube unchanged.

usage: course_admin_client.py SERVER list
       course_admin_client.py SERVER add NODE
       course_admin_client.py SERVER remove NODE

Prints the course project's output lines; exits 1 with the gRPC error on
failure.
"""
import os
import sys
import tempfile

from grpc_tools import protoc

PROTO = """
syntax = "proto3";
package tritontube;
service VideoContentAdminService {
  rpc AddNode(AddNodeRequest) returns (AddNodeResponse);
  rpc RemoveNode(RemoveNodeRequest) returns (RemoveNodeResponse);
  rpc ListNodes(ListNodesRequest) returns (ListNodesResponse);
}
message AddNodeRequest { string node_address = 1; }
message AddNodeResponse { int32 migrated_file_count = 1; }
message RemoveNodeRequest { string node_address = 1; }
message RemoveNodeResponse { int32 migrated_file_count = 1; }
message ListNodesRequest {}
message ListNodesResponse { repeated string nodes = 1; }
"""


def load():
    out = tempfile.mkdtemp(prefix="course-admin-")
    with open(os.path.join(out, "admin.proto"), "w") as f:
        f.write(PROTO)
    rc = protoc.main(["protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}", "admin.proto"])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import admin_pb2
    import admin_pb2_grpc
    return admin_pb2, admin_pb2_grpc


def main():
    import grpc

    server, verb, *rest = sys.argv[1:]
    pb, rpc = load()
    stub = rpc.VideoContentAdminServiceStub(grpc.insecure_channel(server))
    try:
        if verb == "list":
            r = stub.ListNodes(pb.ListNodesRequest())
            print("Storage cluster nodes:")
            for n in r.nodes:
                print(f"  - {n}")
        elif verb == "add":
            r = stub.AddNode(pb.AddNodeRequest(node_address=rest[0]))
            print(f"Successfully added node: {rest[0]}")
            print(f"Number of files migrated: {r.migrated_file_count}")
        elif verb == "remove":
            r = stub.RemoveNode(pb.RemoveNodeRequest(node_address=rest[0]))
            print(f"Successfully removed node: {rest[0]}")
            print(f"Number of files migrated: {r.migrated_file_count}")
        else:
            sys.exit(f"unknown verb {verb}")
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The generated protobuf modules in the tree match what the .proto files give."""

from __future__ import annotations

import pathlib

from tools import gen_proto


def test_generated_modules_are_current(tmp_path):
    protos = sorted(gen_proto.PROTO_DIR.glob("*.proto"))
    gen_proto.generate([str(p.relative_to(gen_proto.ROOT)) for p in protos], tmp_path, gen_proto.ROOT)
    fresh = tmp_path / "proto" / "pipedreamer" / "v1"
    generated = sorted(p.name for p in fresh.iterdir())
    assert generated == [
        "execution_pb2.py",
        "execution_pb2.pyi",
        "execution_pb2_grpc.py",
        "workflow_pb2.py",
        "workflow_pb2.pyi",
        "workflow_pb2_grpc.py",
    ]
    # The modules Python imports: the checkout's (tools/venv.sh made them) or, under
    # Bazel, those //proto/pipedreamer/v1:py_codegen generated into the runfiles.
    from proto.pipedreamer.v1 import execution_pb2

    imported = pathlib.Path(execution_pb2.__file__).parent
    for name in generated:
        assert (imported / name).read_bytes() == (fresh / name).read_bytes(), f"{name} is stale: run tools/venv.sh"


def test_interface_names_match_the_design():
    from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc

    assert execution_pb2.DESCRIPTOR.package == "pipedreamer.v1"
    service = execution_pb2.DESCRIPTOR.services_by_name["WorkflowService"]
    run = service.methods_by_name["Run"]
    assert run.input_type.full_name == "pipedreamer.v1.RunRequest"
    assert run.output_type.full_name == "pipedreamer.v1.ExecutionResult"
    assert hasattr(execution_pb2_grpc, "WorkflowServiceStub")
    request = execution_pb2.RunRequest.DESCRIPTOR
    assert request.fields_by_name["input"].message_type.full_name == "google.protobuf.Value"
    assert request.fields_by_name["trigger"].type == request.fields_by_name["trigger"].TYPE_STRING
    result = execution_pb2.ExecutionResult.DESCRIPTOR
    assert set(result.fields_by_name) >= {"run_id", "workflow", "version", "status", "output", "nodes", "started_at", "duration"}
    assert [v.name for v in execution_pb2.RunStatus.DESCRIPTOR.values][:3] == [
        "RUN_STATUS_UNSPECIFIED",
        "RUN_STATUS_SUCCEEDED",
        "RUN_STATUS_FAILED",
    ]
    assert {v.name for v in execution_pb2.NodeStatus.DESCRIPTOR.values} >= {
        "NODE_STATUS_SUCCEEDED",
        "NODE_STATUS_FAILED",
        "NODE_STATUS_TIMED_OUT",
        "NODE_STATUS_CANCELLED",
        "NODE_STATUS_SKIPPED",
    }

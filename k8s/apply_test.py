"""The pure parts of deploy: what is sent, conflict parsing, rollout state, pod diagnosis."""

from __future__ import annotations

import base64

from k8s.apply import conflicts_of, for_apply, pod_not_ready_reason, rollout_state
from k8s.errors import ClusterError


def test_secret_is_applied_as_data_so_pipedreamer_owns_each_key():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque", "stringData": {"a": "é1"}}
    sent = for_apply(secret)
    assert "stringData" not in sent
    assert base64.b64decode(sent["data"]["a"]).decode() == "é1"
    assert secret["stringData"] == {"a": "é1"}, "the rendered object is not modified"
    deployment = {"kind": "Deployment", "metadata": {"name": "d"}}
    assert for_apply(deployment) == deployment


def test_conflicts_name_field_and_manager():
    error = ClusterError(
        "conflict",
        reason="conflict",
        causes=[
            {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl-edit" using apps/v1', "field": ".spec.replicas"},
            {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl" with subresource "scale" using apps/v1', "field": ".spec.replicas"},
            {"reason": "Other", "message": "ignored"},
        ],
    )
    conflicts = conflicts_of(error)
    assert [(c.field, c.manager) for c in conflicts] == [
        (".spec.replicas", "kubectl-edit"),
        (".spec.replicas", "kubectl (subresource scale)"),
    ]


def test_rollout_state():
    deployment = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2},
    }
    state = rollout_state(deployment)
    assert not state.done, "an old pod is still there"
    assert "1 old pending termination" in state.describe()
    deployment["status"]["replicas"] = 2
    assert rollout_state(deployment).done
    deployment["metadata"]["generation"] = 3
    assert not rollout_state(deployment).done, "the controller has not seen the new spec yet"
    stuck = {"spec": {}, "status": {"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "took too long"}]}}
    assert rollout_state(stuck).failed_reason == "took too long"
    refused = {"spec": {}, "status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "message": 'RuntimeClass "gvisor" not found'}]}}
    assert rollout_state(refused).replica_failure == 'RuntimeClass "gvisor" not found'


def test_pod_not_ready_reasons():
    assert pod_not_ready_reason({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}) == ""
    pending = {"spec": {}, "status": {"phase": "Pending"}}
    assert "not scheduled yet" in pod_not_ready_reason(pending)
    unschedulable = {"spec": {}, "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/3 nodes are available"}]}}
    assert "0/3 nodes are available" in pod_not_ready_reason(unschedulable)
    pulling = {
        "spec": {"nodeName": "n"},
        "status": {"phase": "Pending", "containerStatuses": [{"name": "engine", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]},
    }
    assert "ImagePullBackOff" in pod_not_ready_reason(pulling)
    crashed = {"spec": {"nodeName": "n"}, "status": {"phase": "Running", "containerStatuses": [{"name": "engine", "state": {"terminated": {"reason": "Error", "exitCode": 1}}}]}}
    assert "exit 1" in pod_not_ready_reason(crashed)

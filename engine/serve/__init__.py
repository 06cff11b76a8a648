"""Serving a workflow: HTTP, gRPC and NATS front ends over one admission gate, in one process.

`process` starts and stops it all (`python -m engine`, `pipedreamer dev`);
`options` holds the flags both share and stays light, since the CLI imports it
for every command; `admission` is the gate every front end goes through.
"""

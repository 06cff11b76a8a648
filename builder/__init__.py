"""Image builder: deterministic layers, OCI layouts, registry push, Dockerfile."""

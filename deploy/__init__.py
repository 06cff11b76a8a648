"""Deployment assets: the distroless base, cluster add-ons."""

"""The distroless Python base: package list, lock, refresh and assembly."""

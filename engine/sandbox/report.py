"""What the lock reports: which layers hold, for `/healthz?verbose` and the start-up line."""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.sandbox.policy import PermissionPolicy


@dataclasses.dataclass(frozen=True)
class LayerStatus:
    name: str
    active: bool
    detail: str  # what it enforces, or why it is not active
    abi: int | None = None  # Landlock only

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"active": self.active, "detail": self.detail}
        if self.name == "landlock":
            out["abi"] = self.abi
        return out


@dataclasses.dataclass(frozen=True)
class LockReport:
    """Which layers hold, for `/healthz?verbose` and the startup log line."""

    policy: PermissionPolicy
    layers: tuple[LayerStatus, ...]
    read_paths: tuple[str, ...]
    write_paths: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    run_paths: tuple[str, ...] = ()  # where programs may come from (--allow-run only)

    def layer(self, name: str) -> LayerStatus:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def degraded(self) -> bool:
        return not all(layer.active for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": True,
            "degraded": self.degraded,
            "policy": self.policy.to_dict(),
            "layers": {layer.name: layer.to_dict() for layer in self.layers},
            "read_paths": list(self.read_paths),
            "write_paths": list(self.write_paths),
            "run_paths": list(self.run_paths),
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        parts = []
        for layer in self.layers:
            state = "active" if layer.active else "INACTIVE"
            if layer.abi is not None and layer.active:
                state += f" (ABI {layer.abi})"
            parts.append(f"{layer.name} {state}")
        return f"permission lock: {', '.join(parts)}; {self.policy.describe()}"

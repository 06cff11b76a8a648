"""The floor: a minimal hand-written asyncio DAG scheduler (no timeouts, retries, results or
bookkeeping), and the node functions it calls, imported straight from the workflow files."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any, Callable

import yaml


class FloorDAG:
    def __init__(self, directory: Path):
        spec = yaml.safe_load((directory / "workflow.yaml").read_text())
        self.functions: dict[str, Callable] = {}
        for node_id, entry in spec["nodes"].items():
            module_spec = importlib.util.spec_from_file_location(f"floor_{directory.name}_{node_id}", directory / entry["path"])
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            self.functions[node_id] = module.run
        self.deps: dict[str, list[str]] = {n: [] for n in spec["nodes"]}
        self.children: dict[str, list[str]] = {n: [] for n in spec["nodes"]}
        for edge in spec["edges"]:
            self.deps[edge["to"]].append(edge["from"])
            self.children[edge["from"]].append(edge["to"])
        self.roots = [n for n, d in self.deps.items() if not d]
        self.sinks = [n for n, c in self.children.items() if not c]

    async def run(self, input: Any) -> Any:
        loop = asyncio.get_running_loop()
        pending = {n: len(d) for n, d in self.deps.items()}
        outputs: dict[str, Any] = {}
        done = loop.create_future()
        left = [len(self.deps)]
        tasks = set()

        async def node(node_id: str, value: Any) -> None:
            outputs[node_id] = await self.functions[node_id](None, value)
            left[0] -= 1
            if not left[0]:
                done.set_result(None)
                return
            for child in self.children[node_id]:
                pending[child] -= 1
                if not pending[child]:
                    deps = self.deps[child]
                    arg = outputs[deps[0]] if len(deps) == 1 else {d: outputs[d] for d in deps}
                    task = loop.create_task(node(child, arg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

        for root in self.roots:
            task = loop.create_task(node(root, input))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await done
        return outputs[self.sinks[0]] if len(self.sinks) == 1 else {s: outputs[s] for s in self.sinks}

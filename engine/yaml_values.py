"""YAML as plain JSON-like values, bounded: the spec parser's and the secrets readers' one way to read values.

Aliases let a few lines stand for an exponential number of values ("billion
laughs"): every value made counts against MAX_YAML_NODES, aliases included,
so such a document is refused instead of expanded. Nesting is capped and a
recursive alias (a value containing itself) is refused too.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

MAX_YAML_NODES = 100_000
MAX_NESTING = 64


class YAMLValueError(ValueError):
    """A value that cannot be used; knows its field path (`config.a[2]`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class PlainValues:
    """Turns composed YAML nodes into str, int, float, bool, None, lists and dicts.

    One instance counts every value it makes, across calls: give one document
    one instance.
    """

    def __init__(self, limit: int = MAX_YAML_NODES):
        self.limit = limit
        self.made = 0

    def value(self, node: yaml.Node, field: str = "", _open: frozenset[int] = frozenset()) -> Any:
        """`node` as a plain value, or raises YAMLValueError naming the field."""
        self.made += 1
        if self.made > self.limit:
            raise YAMLValueError(field, f"document too large (more than {self.limit} values after aliases)")
        if id(node) in _open:
            raise YAMLValueError(field, "recursive YAML alias (a value that contains itself)")
        if len(_open) > MAX_NESTING:
            raise YAMLValueError(field, f"nested more than {MAX_NESTING} levels deep")
        _open = _open | {id(node)}
        if isinstance(node, yaml.ScalarNode):
            try:
                value = yaml.SafeLoader("").construct_object(node)
            except (yaml.YAMLError, ValueError, TypeError) as exc:
                raise YAMLValueError(field, f"cannot read value {node.value!r}: {getattr(exc, 'problem', None) or exc}") from None
            if value is None or isinstance(value, (bool, int, float, str)):
                if isinstance(value, float) and not math.isfinite(value):
                    raise YAMLValueError(field, f"{node.value!r} is not a finite number")
                return value
            raise YAMLValueError(field, f"{type(value).__name__} values are not supported; quote it")
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, f"{field}[{i}]", _open) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YAMLValueError(field, "keys must be plain strings")
                key = key_node.value
                if key == "<<" and key_node.tag == "tag:yaml.org,2002:merge":
                    raise YAMLValueError(field, "YAML merge keys (<<) are not supported; write the keys out")
                out[key] = self.value(value_node, f"{field}.{key}" if field else key, _open)
            return out
        raise YAMLValueError(field, "unsupported YAML node")


def load_plain_yaml(text: str) -> Any:
    """One YAML document as plain values (None when empty).

    Raises yaml.YAMLError for syntax (with its marks), YAMLValueError for a
    value that cannot be used, a document too large after aliases included.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise YAMLValueError("", "nested too deeply") from None
    return None if root is None else PlainValues().value(root)

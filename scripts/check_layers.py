#!/usr/bin/env python3
"""Checks that rpc-core's modules import only downwards.

The layer order is the order of the module declarations in rpc-core/src/lib.rs (lowest
first; docs/ARCHITECTURE.md explains it). A module may name (`crate::x`) only modules
declared before it. Prints each upward import and exits 1 if there is any."""
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rpc-core", "src")
lib = open(os.path.join(root, "lib.rs"), encoding="utf-8").read()
order = re.findall(r"^(?:pub(?:\([a-z]+\))? )?mod ([a-z_]+);", lib, flags=re.M)


def files(module):
    single = os.path.join(root, module + ".rs")
    if os.path.exists(single):
        yield single
    folder = os.path.join(root, module)
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name.endswith(".rs"):
                yield os.path.join(dirpath, name)


def imports(path):
    text = open(path, encoding="utf-8").read()
    # Unit tests may reach anywhere; comments are not imports.
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    found = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
    for group in re.findall(r"\buse\s+crate::\{([^;]*)\}", text, flags=re.S):
        found.update(re.findall(r"(?:^|[,{\s])([a-z_][a-z0-9_]*)\s*(?:::|,|\}|$)", group))
    return found


upward = []
for rank, module in enumerate(order):
    for path in files(module):
        for target in imports(path) & set(order):
            if order.index(target) > rank:
                upward.append(f"{os.path.relpath(path, root)}: {module} imports {target}, a layer above it")
for line in upward:
    print(line)
print(f"{len(order)} modules in layer order; {len(upward)} upward imports")
sys.exit(1 if upward else 0)

#!/usr/bin/env python3
"""Checks that rpc-core's modules import only downwards.

The layers are the groups of module declarations in rpc-core/src/lib.rs, each under a
`// Layer N` comment, lowest first (docs/ARCHITECTURE.md explains them). A module may name
(`crate::x`) only modules of the layers before its own. Prints each import that goes up or
sideways, and exits 1 if there is any."""
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rpc-core", "src")
lib = open(os.path.join(root, "lib.rs"), encoding="utf-8").read()
layer_of = {}
layer = None
for line in lib.splitlines():
    heading = re.match(r"// Layer (\d+)", line)
    if heading:
        layer = int(heading.group(1))
        continue
    declared = re.match(r"(?:pub(?:\([a-z]+\))? )?mod ([a-z_]+);", line)
    if declared:
        if layer is None:
            sys.exit(f"lib.rs declares `{declared.group(1)}` outside a `// Layer N` group")
        layer_of[declared.group(1)] = layer
order = list(layer_of)


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
for module in order:
    for path in files(module):
        for target in sorted(imports(path) & set(order) - {module}):
            if layer_of[target] >= layer_of[module]:
                where = "above it" if layer_of[target] > layer_of[module] else "of its own layer"
                upward.append(f"{os.path.relpath(path, root)}: {module} imports {target}, a module {where}")
for line in upward:
    print(line)
print(f"{len(order)} modules in {len(set(layer_of.values()))} layers; {len(upward)} imports that do not go down")
sys.exit(1 if upward else 0)

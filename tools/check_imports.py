"""What `make lint` checks of the imports beyond import-linter's contracts (pyproject.toml),
over the same grimp graph:

- no import cycle anywhere in omni, adapters or bench: import-linter's acyclic contract
  only compares sibling packages. Imports under `if TYPE_CHECKING:` count: a circle for
  the type checker is still one a reader has to untangle;
- no channel folder (adapters/) holds a Redis client: no `.redis` attribute, no import
  of the application's `REDIS` key. Channels call core modules with the store.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp

PACKAGES = ("omni", "adapters", "bench")


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (or a
    module importing itself), each sorted (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.find_modules_directly_imported_by(node):
                    found.append(sorted(component))
    return found


def redis_uses(root: Path) -> list[str]:
    """Lines in adapters/ that reach a Redis client: a `.redis` attribute (`store.redis`)
    or the application's `REDIS` key. import-linter forbids importing redis; a client
    handed over by the core would pass it, so the lines are read (ast, not grimp)."""
    found = []
    for path in sorted((root / "adapters").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "redis":
                found.append(f"{path.relative_to(root)}:{node.lineno}: .redis")
            elif isinstance(node, ast.ImportFrom) and any(a.name == "REDIS" for a in node.names):
                found.append(f"{path.relative_to(root)}:{node.lineno}: imports REDIS")
    return found


def main() -> int:
    # bench is not installed: it is found from the checkout, as `python -m bench` does.
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    graph = grimp.build_graph(*PACKAGES)
    reaches = redis_uses(root)
    for line in reaches:
        print(f"a channel folder reaches Redis (call a core module): {line}", file=sys.stderr)
    found = cycles(graph)
    for component in found:
        first = component[0]
        # One concrete circle through the component, to say where to cut.
        back = [m for m in component if first in graph.find_modules_directly_imported_by(m)]
        path = graph.find_shortest_chain(importer=first, imported=back[0]) if back else None
        circle = " -> ".join([*(path or component), first])
        print(f"import cycle ({len(component)} modules): {circle}", file=sys.stderr)
    if not found:
        print(f"no import cycles in {', '.join(PACKAGES)}")
    return 1 if found or reaches else 0


if __name__ == "__main__":
    sys.exit(main())

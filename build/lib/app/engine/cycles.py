"""Cycles of a definition's ``next`` graph: which are allowed (loops a condition can leave)
and which actions make up a while's loop.

Every search here keeps its own stack rather than Python's: a definition may hold
thousands of actions in a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Graph = Mapping[int, Iterable[int]]

# A message names at most this many actions of a cycle.
NAMED_IN_MESSAGE = 20


def strongly_connected(graph: Graph) -> list[list[int]]:
    """The strongly connected components of ``graph`` (node -> successors), each a list of
    its nodes (Tarjan's algorithm). A node on no cycle is a component of its own."""
    index_of: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    components: list[list[int]] = []
    for start in graph:
        if start in index_of:
            continue
        index_of[start] = low[start] = len(index_of)
        stack.append(start)
        on_stack.add(start)
        path = [(start, iter(graph[start]))]  # the search's own stack
        while path:
            node, successors = path[-1]
            successor = next(successors, None)
            if successor is None:
                path.pop()
                if path:
                    parent = path[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index_of[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
            elif successor not in index_of:
                index_of[successor] = low[successor] = len(index_of)
                stack.append(successor)
                on_stack.add(successor)
                path.append((successor, iter(graph[successor])))
            elif successor in on_stack:
                low[node] = min(low[node], index_of[successor])
    return components


def cycles(graph: Graph) -> list[list[int]]:
    """The components of ``graph`` that hold a cycle (a self-loop counts), each sorted, in
    the order of their smallest nodes."""
    return sorted(
        sorted(component)
        for component in strongly_connected(graph)
        if len(component) > 1 or component[0] in graph[component[0]]
    )


def cycle_message(members: list[int]) -> str:
    """``actions 2, 3, 4 form a cycle that no condition can leave ...``."""
    named = ", ".join(str(member) for member in members[:NAMED_IN_MESSAGE])
    if len(members) > NAMED_IN_MESSAGE:
        named += f" and {len(members) - NAMED_IN_MESSAGE} more"
    subject = f"action {named} forms" if len(members) == 1 else f"actions {named} form"
    return (
        f"{subject} a cycle that no condition can leave (a cycle needs a while, if or switch "
        "with a branch out of it)"
    )


def loop_of(graph: Graph, head: int, body: Iterable[int]) -> set[int]:
    """The actions of the loop of ``head`` (a while) whose body starts at ``body``: those
    reached from the body without passing through ``head`` that lead back to ``head``. An
    outer loop's actions are not in an inner loop's; an inner loop's are in the outer's."""
    reached = {node for node in body if node != head}
    frontier = list(reached)
    predecessors: dict[int, list[int]] = {}
    while frontier:
        node = frontier.pop()
        for successor in graph[node]:
            predecessors.setdefault(successor, []).append(node)
            if successor != head and successor not in reached:
                reached.add(successor)
                frontier.append(successor)
    back = set()
    frontier = [head]
    while frontier:
        for node in predecessors.get(frontier.pop(), ()):
            if node not in back:
                back.add(node)
                frontier.append(node)
    return back

"""Reading compiled CUDA kernels without a GPU: SASS listings, resource usage and steady-state loop counts.

Uses ``cuobjdump`` (pip package ``nvidia-cuda-cuobjdump``, or the CUDA toolkit's) on a built library or cubin.
The steady state of a score kernel is its innermost loop that issues ``MUFU.EX2`` (one MC pass of a row): its
static instruction count is an upper bound of what one iteration issues (cold branches included).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

__all__ = ["find_tool", "functions", "resources", "Loop", "loops", "steady_state", "demangle"]

_FUNCTION = re.compile(r"^\s*Function : (\S+)")
_INSTRUCTION = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"\bBRA(?:\.\S+)?\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)")


def find_tool(name: str) -> str:
    """Path of a CUDA binary tool: next to this Python's nvidia pip packages, then CUDA_HOME, then PATH."""
    prefixes = [os.path.dirname(os.path.dirname(sys.executable)), sys.prefix]
    for prefix in prefixes:
        hits = glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages", "nvidia", "*", "bin", name))
        if hits:
            return hits[0]
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = os.path.join(cuda_home, "bin", name)
    if os.path.exists(candidate):
        return candidate
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (pip install nvidia-cuda-cuobjdump, or set CUDA_HOME)")
    return found


def _run(args: list[str]) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def functions(binary: str, arch: str = "sm_90") -> dict[str, list[tuple[int, str]]]:
    """Mangled kernel name -> [(address, instruction text without predicate-free trailing ';')] for one arch."""
    text = _run([find_tool("cuobjdump"), "-sass", "-arch", arch, binary])
    out: dict[str, list[tuple[int, str]]] = {}
    current = None
    for line in text.splitlines():
        match = _FUNCTION.match(line)
        if match:
            current = out.setdefault(match.group(1), [])
            continue
        match = _INSTRUCTION.match(line)
        if match and current is not None:
            current.append((int(match.group(1), 16), match.group(2)))
    return out


def resources(binary: str, arch: str = "sm_90") -> dict[str, dict[str, int]]:
    """Mangled kernel name -> {'REG': .., 'SHARED': .., 'STACK': .., 'LOCAL': ..} for one arch."""
    text = _run([find_tool("cuobjdump"), "-res-usage", "-arch", arch, binary])
    out: dict[str, dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        match = re.match(r"\s*Function (\S+):", line)
        if match:
            name = match.group(1)
        elif name and "REG:" in line:
            out[name] = {key: int(value) for key, value in re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line)}
            name = None
    return out


def demangle(names: list[str]) -> dict[str, str]:
    text = _run(["c++filt"] + [n for n in names]) if names else ""
    return dict(zip(names, text.splitlines(), strict=True))


def _opcode(text: str) -> str:
    body = re.sub(r"^@!?U?P[T0-9]+\s+", "", text)
    return body.split()[0] if body else ""


@dataclass
class Loop:
    start: int  # index of the first instruction (the back edge's target)
    end: int  # index of the backward branch

    def contains(self, other: Loop) -> bool:
        return (
            self.start <= other.start and other.end <= self.end and (self.start, self.end) != (other.start, other.end)
        )

    def size(self) -> int:
        return self.end - self.start + 1


def loops(code: list[tuple[int, str]]) -> list[Loop]:
    """Every natural loop, as the address range of a backward branch and its target."""
    index = {address: i for i, (address, _) in enumerate(code)}
    out = []
    for i, (address, text) in enumerate(code):
        match = _BRANCH.search(text)
        if match:
            target = int(match.group(1), 16)
            if target <= address and target in index:
                out.append(Loop(index[target], i))
    return out


# The v2 score kernel marks its rarely taken paths (the partial first and last 16 bytes of each slab, run by two
# threads of a block; BALD's recount of a row with a -inf logit) with a zero-length sleep (ENTROPY_AL_COLD_PATH):
# a forward branch that skips such code skips a cold path.
COLD_MARKER = "NANOSLEEP"


def cold_ranges(code: list[tuple[int, str]], first: int, last: int) -> list[tuple[int, int]]:
    """Index ranges [a, b) inside code[first..last] that a conditional forward branch skips and that contain the
    cold marker: executed by two threads of a block once per slab, not by the steady state."""
    index = {address: i for i, (address, _) in enumerate(code)}
    out = []
    for i in range(first, last + 1):
        address, text = code[i]
        match = _BRANCH.search(text)
        if not (match and text.startswith("@")):
            continue
        target = index.get(int(match.group(1), 16))
        if target is None or target <= i or target > last + 1:
            continue
        if any(COLD_MARKER in t for _, t in code[i + 1 : target]):
            out.append((i + 1, target))
    return out


def count(code: list[tuple[int, str]], first: int, last: int, opcode_prefix: str = "", hot_only: bool = True) -> int:
    """Instructions (NOPs excluded) in code[first..last] whose opcode starts with the prefix; with hot_only,
    not counting the cold ranges."""
    cold = set()
    if hot_only:
        for a, b in cold_ranges(code, first, last):
            cold.update(range(a, b))
    n = 0
    for i in range(first, last + 1):
        op = _opcode(code[i][1])
        if i not in cold and op != "NOP" and op.startswith(opcode_prefix):
            n += 1
    return n


def longest_path(
    code: list[tuple[int, str]], first: int, last: int, weight, skip: set[int] = frozenset(), trace: bool = False
):
    """Largest total weight of an acyclic path from code[first] to code[last] that avoids cold code (back edges
    and exits dropped; a path that reaches the cold marker ends there), each instruction weighing weight(opcode)
    and those in `skip` 0. An upper bound of what one steady-state iteration of a loop spanning first..last
    issues, without adding up mutually exclusive branches."""
    index = {address: i for i, (address, _) in enumerate(code)}

    def cost(i: int) -> int:
        return 0 if i in skip else weight(_opcode(code[i][1]))

    best = {first: cost(first)}
    came_from: dict[int, int] = {}
    for i in range(first, last + 1):
        if i not in best:
            continue
        text = code[i][1]
        op = _opcode(text)
        if op == COLD_MARKER:
            continue
        predicated = text.startswith("@")
        successors = []
        match = _BRANCH.search(text)
        if match:
            target = index.get(int(match.group(1), 16))
            if target is not None and i < target <= last:
                successors.append(target)
            if predicated:
                successors.append(i + 1)
        elif op == "EXIT" and not predicated:
            pass
        else:
            successors.append(i + 1)
        for j in successors:
            if j <= last and best[i] + cost(j) > best.get(j, -1):
                best[j] = best[i] + cost(j)
                came_from[j] = i
    if not trace:
        return best.get(last, 0)
    path, i = [last], last
    while i in came_from:
        i = came_from[i]
        path.append(i)
    return best.get(last, 0), path[::-1]


def _instruction(op: str) -> int:
    return 0 if op == "NOP" else 1


def _mufu(op: str) -> int:
    return 1 if op.startswith("MUFU") else 0


def _cold_loop(code: list[tuple[int, str]], loop: Loop) -> bool:
    """A loop whose first basic block holds the cold marker (a rarely taken path's loop) is not a steady state."""
    for _, text in code[loop.start : loop.end + 1]:
        op = _opcode(text)
        if op == COLD_MARKER:
            return True
        if op.startswith("BRA") or op == "EXIT":
            return False
    return False


@dataclass
class SteadyState:
    pass_instructions: int  # one MC pass of a row (the innermost loop that issues MUFU.EX2), longest path
    pass_mufu: int
    tile_instructions: int  # the enclosing loop without the pass loop (last pass, per-sample work), longest path
    tile_mufu: int


def steady_state(code: list[tuple[int, str]]) -> SteadyState:
    found = loops(code)
    with_ex2 = [lp for lp in found if count(code, lp.start, lp.end, "MUFU.EX2") > 0 and not _cold_loop(code, lp)]
    if not with_ex2:
        raise ValueError("no loop issues MUFU.EX2")
    inner = min(with_ex2, key=Loop.size)
    pass_instr = longest_path(code, inner.start, inner.end, _instruction)
    pass_mufu = longest_path(code, inner.start, inner.end, _mufu)
    outer_candidates = [lp for lp in found if lp.contains(inner)]
    inner_range = set(range(inner.start, inner.end + 1))
    if outer_candidates:
        outer = min(outer_candidates, key=Loop.size)
        first, last = outer.start, outer.end
    else:  # one tile per block: the per-tile work runs once, after the pass loop
        first, last = inner.end + 1, len(code) - 1
    tile_instr = longest_path(code, first, last, _instruction, inner_range)
    tile_mufu = longest_path(code, first, last, _mufu, inner_range)
    return SteadyState(pass_instr, pass_mufu, tile_instr, tile_mufu)

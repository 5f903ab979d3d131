"""The loops with fused multiply-adds in a compiled dispatcher's assembly, for the
helper scripts beside this one (x86 AT&T syntax, as LLVM prints it)."""
import re

STACK = re.compile(r"%[xyz]mm\d+,\s*-?\d*\(%rsp\)|-?\d*\(%rsp\),\s*%[xyz]mm\d+")


def fma_loops(dispatcher):
    """Each backward branch's loop that holds FMAs: its length in lines, its FMAs,
    the vector register kinds they use, and any vector register moved to or from
    the stack inside it (a spill)."""
    loops = []
    for asm in dispatcher.inspect_asm().values():
        lines = asm.splitlines()
        labels = {line.strip()[:-1]: i for i, line in enumerate(lines) if re.match(r"^\.LBB\w+:$", line)}
        for i, line in enumerate(lines):
            jump = re.match(r"^\s*j\w+\s+(\.LBB\w+)\s*$", line)
            if not jump or labels.get(jump.group(1), i) >= i:
                continue  # not a backward branch: not a loop
            body = lines[labels[jump.group(1)]:i + 1]
            fmas = [b for b in body if "vfmadd" in b or "vfmla" in b]
            if fmas:
                loops.append({"length": len(body), "fmas": len(fmas),
                              "registers": sorted({r[:3] for b in fmas for r in re.findall(r"%([xyz]mm)\d+", b)}),
                              "stack_moves": [b.strip() for b in body if STACK.search(b)]})
    return loops

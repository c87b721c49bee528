"""A tiny held-out corpus (Python, C, JavaScript) written as the corpus builder writes one."""
import json
from pathlib import Path

PY = '''import os


def area(width, height):
    """Area of a rectangle."""
    if width < 0 or height < 0:
        raise ValueError("negative size")
    result = width * height
    return result


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)
        return len(self.items)

    def pop(self):
        if not self.items:
            return None
        return self.items.pop()


def walk(root):
    total = 0
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path):
            total += walk(path)
        else:
            total += os.path.getsize(path)
    return total
'''

C = '''#include <stdio.h>

static int clamp(int x, int lo, int hi) {
    if (x < lo) {
        return lo;
    }
    if (x > hi) {
        return hi;
    }
    return x;
}

int sum(const int *xs, int n) {
    int total = 0;
    for (int i = 0; i < n; i++) {
        total += xs[i];
    }
    return total;
}
'''

JS = '''function greet(name) {
    const message = "Hello, " + name;
    console.log(message);
    return message;
}

function range(n) {
    const out = [];
    for (let i = 0; i < n; i++) {
        out.push(i * 2);
    }
    return out;
}
'''

FILES = [("pkg/geometry.py", "python", PY), ("lib/clamp.c", "c", C), ("web/greet.js", "javascript", JS),
         ("pkg/other.py", "python", PY.replace("area", "surface").replace("Stack", "Queue"))]


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    recs = [{"path": p, "package": p.split("/")[0], "lang": lang, "text": text} for p, lang, text in FILES]
    (folder / "holdout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:2]))
    (folder / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[2:]))
    return folder

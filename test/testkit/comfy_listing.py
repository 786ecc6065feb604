"""What ComfyUI's stock LoraLoader can reach, computed like folder_paths does (written from its
documented behaviour): every `loras` root walked recursively with os.walk(followlinks=True), only
`.git` skipped (hidden folders are walked), files filtered by supported_pt_extensions; and
get_full_path(), which re-roots a name at "/" so ".." cannot climb out, then takes the first root
where the file exists.

    python3 comfy_listing.py <root> [<root> ...] [--resolve <name> ...]
prints {"list": [relative names], "resolved": {name: absolute path or null}} as JSON.
"""
import json
import os
import sys

EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def get_filename_list(roots):
    found = set()
    for root in roots:
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True, topdown=True):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for f in filenames:
                if os.path.splitext(f)[1].lower() in EXTENSIONS:
                    found.add(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(found)


def get_full_path(roots, name):
    name = os.path.relpath(os.path.join("/", name), "/")
    for root in roots:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


if __name__ == "__main__":
    args = sys.argv[1:]
    names = []
    if "--resolve" in args:
        at = args.index("--resolve")
        args, names = args[:at], args[at + 1 :]
    roots = [os.path.realpath(r) for r in args]
    print(json.dumps({"list": get_filename_list(roots), "resolved": {n: get_full_path(roots, n) for n in names}}))

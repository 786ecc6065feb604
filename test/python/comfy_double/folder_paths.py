"""Test double of ComfyUI's folder_paths (folder_paths.py at upstream a246cc02): only what the loader
relies on, behaving the same: several roots per category, recursive listing that follows links,
skips only `.git` and filters by extension, and get_full_path re-rooting the name (no `..` escape),
first existing file wins."""

import os
import time

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths = {}
filename_list_cache = {}
base_path = models_dir = output_directory = None


def init(base):
    """What ComfyUI does at start-up for `loras`: models/loras, then output/loras (main.py apply_custom_paths)."""
    global base_path, models_dir, output_directory
    base_path = os.path.realpath(base)
    models_dir = os.path.join(base_path, "models")
    output_directory = os.path.join(base_path, "output")
    folder_names_and_paths.clear()
    filename_list_cache.clear()
    folder_names_and_paths["loras"] = ([os.path.join(models_dir, "loras")], set(supported_pt_extensions))
    add_model_folder_path("loras", os.path.join(output_directory, "loras"))


def add_model_folder_path(name, path, is_default=False):
    paths, exts = folder_names_and_paths.setdefault(name, ([], set()))
    if path in paths:
        paths.remove(path)
    paths.insert(0, path) if is_default else paths.append(path)


def get_folder_paths(name):
    return folder_names_and_paths[name][0][:]


def recursive_search(directory, excluded_dir_names=None):
    if not os.path.isdir(directory):
        return [], {}
    excluded = set(excluded_dir_names or [".git"])
    found, dirs = [], {directory: os.path.getmtime(directory)}
    for root, subdirs, files in os.walk(directory, followlinks=True, topdown=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        found.extend(os.path.relpath(os.path.join(root, f), directory) for f in files)
        for d in subdirs:
            dirs[os.path.join(root, d)] = os.path.getmtime(os.path.join(root, d))
    return found, dirs


def filter_files_extensions(files, extensions):
    return sorted(f for f in files if not extensions or os.path.splitext(f)[-1].lower() in extensions)


def get_filename_list(name):
    cached = filename_list_cache.get(name)
    if cached is not None and all(os.path.isdir(d) and os.path.getmtime(d) == t for d, t in cached[1].items()):
        if all(p in cached[1] for p in folder_names_and_paths[name][0] if os.path.isdir(p)):
            return list(cached[0])
    files, dirs = set(), {}
    paths, exts = folder_names_and_paths[name]
    for root in paths:
        found, d = recursive_search(root, excluded_dir_names=[".git"])
        files.update(filter_files_extensions(found, exts))
        dirs.update(d)
    filename_list_cache[name] = (sorted(files), dirs, time.perf_counter())
    return sorted(files)


def get_full_path(name, filename):
    if name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for root in folder_names_and_paths[name][0]:
        path = os.path.join(root, filename)
        if os.path.isfile(path):
            return path
    return None


def get_full_path_or_raise(name, filename):
    path = get_full_path(name, filename)
    if path is None:
        raise FileNotFoundError("Model in folder '%s' with filename '%s' not found." % (name, filename))
    return path

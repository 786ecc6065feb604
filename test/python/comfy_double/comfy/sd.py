"""Test double of comfy.sd.load_lora_for_models: clones the patchers and adds the patches, never
mutating its inputs; None stays None."""


class Patcher:
    def __init__(self, name, patches=()):
        self.name = name
        self.patches = list(patches)

    def clone(self):
        return Patcher(self.name, self.patches)


def lora_digest(lora):
    import hashlib

    h = hashlib.sha256()
    for key in sorted(lora):
        h.update(key.encode() + b"\0" + bytes(lora[key]))
    return h.hexdigest()


def load_lora_for_models(model, clip, lora, strength_model, strength_clip):
    digest = lora_digest(lora)
    new_model = None if model is None else model.clone()
    new_clip = None if clip is None else clip.clone()
    if new_model is not None:
        new_model.patches.append((digest, strength_model))
    if new_clip is not None:
        new_clip.patches.append((digest, strength_clip))
    return (new_model, new_clip)

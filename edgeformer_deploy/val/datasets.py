"""Labelled evaluation sets in their standard layouts -> (image, target) samples, checked before any inference.

- classification: an ImageNet-style folder, ``<class>/<image>`` with the class folders named by WordNet id
  (``n01440764``, the standard ImageNet validation layout) or by class index (``0042``);
- detection: COCO, ``annotations/instances_<split>.json`` + the image folder (``<split>/`` or
  ``images/<split>/``, the ml-cvnets layout);
- segmentation: PASCAL VOC, ``JPEGImages/``, ``SegmentationClass/`` PNGs and an image list
  (``ImageSets/Segmentation/<split>.txt`` of ids, or ml-cvnets' ``list/<split>.txt`` of "image mask" paths).

What would only fail halfway (a missing annotation file, a listed image that is not there, a class the
model does not have) is refused here with one line; a file that exists but cannot be decoded is the
runner's business (reported and skipped).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..errors import EdgeformerError
from ..runtime.cli import image_suffixes
from ..runtime.labels import COCO_CATEGORY_IDS, imagenet_wnids, label_set

WNID = re.compile(r"^n\d{8}$")
MAX_ANNOTATION_BYTES = 2 << 30  # a JSON file larger than this is not a COCO annotation file we should parse


class DataError(EdgeformerError):
    """An evaluation set that cannot be used as given (one line, before anything runs)."""


@dataclass(frozen=True)
class Sample:
    image: Path
    target: object  # classification: class index; detection: COCO image id; segmentation: the mask's path


@dataclass
class Dataset:
    task: str
    layout: str  # "imagenet-folder" | "coco" | "voc"
    root: Path
    samples: List[Sample]
    coco: Optional[dict] = None  # detection: the annotation document, completed for pycocotools
    annotations: Optional[Path] = None
    notes: List[str] = field(default_factory=list)


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


# -- which layout is this? ------------------------------------------------------------------------
def sniff_layout(path: Path) -> Optional[str]:
    """The task a data path is laid out for, when it says so unambiguously (None: not recognised)."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "detection"
        if path.suffix.lower() == ".txt":
            return "segmentation"
        return None
    if not path.is_dir():
        return None
    if list(path.glob("annotations/instances_*.json")) or list(path.glob("instances_*.json")):
        return "detection"
    for root in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (root / "JPEGImages").is_dir() and ((root / "SegmentationClass").is_dir()
                                               or (root / "ImageSets" / "Segmentation").is_dir()):
            return "segmentation"
    return None


LAYOUT_NAMES = {"classification": "an ImageNet-style class-folder set", "detection": "a COCO detection set",
                "segmentation": "a PASCAL VOC segmentation set"}


def load_dataset(task: str, path: Path, num_classes: int, split: str = "val",
                 images: Optional[Path] = None) -> Dataset:
    """The evaluation set for a ``task`` artifact; refuses data laid out for another task."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"--data {path}: no such file or folder")
    sniffed = sniff_layout(path)
    if sniffed is not None and sniffed != task:
        raise DataError(f"--data {path} is {LAYOUT_NAMES[sniffed]}, but the artifact is a {task} model")
    if task == "classification":
        return class_folders(path, num_classes)
    if task == "detection":
        return coco_set(path, num_classes - 1, images)  # the network's classes include the background
    if task == "segmentation":
        return voc_set(path, num_classes, split)
    raise DataError(f"no evaluation for {task} artifacts")


# -- classification -------------------------------------------------------------------------------
def class_index(name: str, num_classes: int) -> int:
    """Class folder name -> class index: a WordNet id (ImageNet-1k order) or a number."""
    if WNID.match(name):
        wnids = imagenet_wnids()
        if num_classes != len(wnids) or name not in wnids:
            raise DataError(f"class folder {name!r} is not one of the model's {num_classes} classes "
                            f"(not an ImageNet-1k WordNet id)")
        return wnids.index(name)
    if name.isdigit():
        index = int(name)
        if index >= num_classes:
            raise DataError(f"class folder {name!r} is not one of the model's {num_classes} classes "
                            f"(indices 0-{num_classes - 1})")
        return index
    raise DataError(f"class folder {name!r} is neither a WordNet id (n01440764) nor a class index (0042)")


def class_folders(path: Path, num_classes: int) -> Dataset:
    if not path.is_dir():
        raise DataError(f"--data {path}: a classification set is a folder of class folders, not a file")
    root = path
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders or all(not (WNID.match(p.name) or p.name.isdigit()) for p in folders):
        if (root / "val").is_dir():  # an ImageNet root: its validation split
            root = root / "val"
            folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    suffixes = image_suffixes()
    samples = []
    for folder in folders:
        index = class_index(folder.name, num_classes)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                       and _visible(p, folder))
        samples.extend(Sample(f, index) for f in files)
    if not samples:
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
        why = "images but no class folders" if loose else "no images in class folders"
        raise DataError(f"--data {root}: {why} (expected <class>/<image>, classes named n01440764 or 0042)")
    return Dataset("classification", "imagenet-folder", root, samples)


# -- detection ------------------------------------------------------------------------------------
def _annotation_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("annotations/instances_*.json")) + sorted(path.glob("instances_*.json"))
    if not found:
        raise DataError(f"--data {path}: no annotations/instances_*.json (COCO layout)")
    if len(found) > 1:
        val = [p for p in found if "val" in p.stem]
        if len(val) != 1:
            names = ", ".join(p.name for p in found)
            raise DataError(f"--data {path}: several annotation files ({names}); give the one to use as --data")
        return val[0]
    return found[0]


def _read_json(path: Path) -> object:
    try:
        if path.stat().st_size > MAX_ANNOTATION_BYTES:
            raise DataError(f"{path}: {path.stat().st_size >> 20} MiB is too large for an annotation file")
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e12


def check_coco(document: object, path: Path, num_classes: int) -> dict:
    """A COCO instances document, completed (area, iscrowd, ids) for pycocotools; every category must be
    one of the model's COCO classes (by id and name)."""
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
        raise DataError(f"{path}: not a COCO instances file (needs \"images\", \"annotations\" and "
                        f"\"categories\" lists)")
    names = label_set("coco80") if num_classes == len(COCO_CATEGORY_IDS) else None
    if names is None:
        raise DataError(f"{path}: the model has {num_classes} classes, not COCO's 80")
    known = dict(zip(COCO_CATEGORY_IDS, names))
    categories = []
    for c in document["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise DataError(f"{path}: malformed category {str(c)[:80]} (needs an integer id and a name)")
        if c["id"] not in known:
            raise DataError(f"{path}: category {c['name']!r} (id {c['id']}) is not one of the model's 80 COCO classes")
        if c["name"].strip().lower() != known[c["id"]]:
            raise DataError(f"{path}: category id {c['id']} is {c['name']!r} here but {known[c['id']]!r} for the model")
        categories.append({"id": c["id"], "name": c["name"], "supercategory": c.get("supercategory", "")})
    images, seen = [], set()
    for im in document["images"]:
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            raise DataError(f"{path}: malformed image entry {str(im)[:80]} (needs an integer id and a file_name)")
        if im["id"] in seen:
            raise DataError(f"{path}: image id {im['id']} is listed twice")
        seen.add(im["id"])
        images.append(dict(im))
    category_ids = {c["id"] for c in categories}
    annotations = []
    for k, a in enumerate(document["annotations"]):
        bbox = a.get("bbox") if isinstance(a, dict) else None
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            raise DataError(f"{path}: annotation {k} has no valid bbox [x, y, width, height]")
        if a.get("image_id") not in seen:
            raise DataError(f"{path}: annotation {k} refers to image id {a.get('image_id')}, which is not listed")
        if a.get("category_id") not in category_ids:
            raise DataError(f"{path}: annotation {k} has category id {a.get('category_id')}, which is not listed")
        entry = dict(a, id=a.get("id", k + 1), iscrowd=int(a.get("iscrowd", 0) or 0))
        entry.setdefault("area", float(bbox[2] * bbox[3]))
        annotations.append(entry)
    if len({a["id"] for a in annotations}) != len(annotations):
        raise DataError(f"{path}: annotation ids are not unique")
    return {"images": images, "annotations": annotations, "categories": categories,
            "info": document.get("info", {}), "licenses": document.get("licenses", [])}


def coco_set(path: Path, num_classes: int, images: Optional[Path] = None) -> Dataset:
    annotations = _annotation_file(path)
    coco = check_coco(_read_json(annotations), annotations, num_classes)
    if not coco["images"]:
        raise DataError(f"{annotations}: lists no images")
    split = annotations.stem[len("instances_"):] if annotations.stem.startswith("instances_") else ""
    root = annotations.parent.parent if annotations.parent.name == "annotations" else annotations.parent
    candidates = [images] if images is not None else [
        root / split, root / "images" / split, annotations.parent / split, root / "images", root]
    first = coco["images"][0]["file_name"]
    folder = next((c for c in candidates if c is not None and (c / first).is_file()), None)
    if folder is None:
        where = images if images is not None else root / split
        raise DataError(f"{annotations.name}: its images are not in {where} (looked for {first}; --images DIR)")
    missing = [im["file_name"] for im in coco["images"] if not (folder / im["file_name"]).is_file()]
    if missing:
        raise DataError(f"{annotations.name} lists {len(missing)} image(s) missing from {folder} "
                        f"(first: {missing[0]})")
    samples = [Sample(folder / im["file_name"], im["id"]) for im in coco["images"]]
    return Dataset("detection", "coco", folder, samples, coco=coco, annotations=annotations)


# -- segmentation ---------------------------------------------------------------------------------
def voc_set(path: Path, num_classes: int, split: str = "val") -> Dataset:
    if num_classes != len(label_set("voc21")):
        raise DataError(f"the model has {num_classes} classes, not PASCAL VOC's 21")
    if path.is_file():
        listing = path
        root = path.parents[2] if path.parent.name == "Segmentation" else path.parents[1]
    else:
        root = next((r for r in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012")
                     if (r / "JPEGImages").is_dir()), path)
        options = [root / "ImageSets" / "Segmentation" / f"{split}.txt", root / "list" / f"{split}.txt"]
        listing = next((p for p in options if p.is_file()), None)
        if listing is None:
            raise DataError(f"--data {path}: no image list {options[0].relative_to(root)} or "
                            f"{options[1].relative_to(root)} (PASCAL VOC layout)")
    try:
        lines = [line.split() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{listing}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    samples = []
    for number, parts in enumerate(lines, 1):
        if len(parts) == 1:
            samples.append(Sample(root / "JPEGImages" / f"{parts[0]}.jpg", root / "SegmentationClass" / f"{parts[0]}.png"))
        elif len(parts) == 2:
            samples.append(Sample(root / parts[0].lstrip("/"), root / parts[1].lstrip("/")))
        else:
            raise DataError(f"{listing}:{number}: expected an image id or 'image mask' paths, got {' '.join(parts)[:80]!r}")
    if not samples:
        raise DataError(f"{listing}: lists no images")
    for kind, files in (("image", [s.image for s in samples]), ("mask", [s.target for s in samples])):
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{listing.name} lists {len(missing)} {kind}(s) that do not exist (first: {missing[0]})")
    return Dataset("segmentation", "voc", root, samples, annotations=listing)

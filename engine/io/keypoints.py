"""2D keypoint readers: OpenPose JSON folders and COCO keypoint JSON.

Output layout (``Keypoints2D``): ``data`` [C, T, J, 3] float64 with (x, y, confidence)
in pixels (integer pixel centres, as OpenPose and OpenCV use); a missing joint has
x = y = NaN and confidence 0. Every frame number present in any camera becomes a row
(``frame_indices``); a camera without that frame has it missing.

Several people in a frame
-------------------------
Readers keep *every* detected person (``people`` [C, T, P, J, 3], NaN-padded);
``engine.capture.association.select_subject`` picks one subject consistently across views
and time (it triangulates, so it lives in the capture layer).

Confidence sanitising: NaN, infinite or negative confidences, and NaN/infinite
coordinates, make the joint missing and are counted in the summary.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.body.joint_sets import JointSet, get_joint_set
from engine.fileio import read_json
from engine.validate import MAX_FRAME_NUMBER, float_list

_DIGITS = re.compile(r"(\d+)")


@dataclass
class KeypointSummary:
    cameras: int = 0
    frames: int = 0
    files_read: int = 0
    frames_missing_per_camera: dict = field(default_factory=dict)  # camera -> frames without a file
    empty_frames_per_camera: dict = field(default_factory=dict)    # camera -> files with nobody
    multi_person_frames_per_camera: dict = field(default_factory=dict)
    invalid_values: int = 0        # joints dropped for NaN/inf/negative values
    joint_set_note: str = ""
    subject_note: str = ""
    notes: list = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.cameras} cameras, {self.frames} frames, {self.files_read} keypoint files"]
        if self.joint_set_note:
            out.append(self.joint_set_note)
        for name, d in (("frames without a file", self.frames_missing_per_camera),
                        ("frames with nobody detected", self.empty_frames_per_camera),
                        ("frames with several people", self.multi_person_frames_per_camera)):
            nz = {k: v for k, v in d.items() if v}
            if nz:
                out.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in nz.items()))
        if self.invalid_values:
            out.append(f"{self.invalid_values} joint detections dropped for NaN/infinite/negative values")
        if self.subject_note:
            out.append(self.subject_note)
        out.extend(self.notes)
        return out


@dataclass
class Keypoints2D:
    data: np.ndarray                  # [C, T, J, 3]
    camera_names: list[str]
    frame_indices: np.ndarray         # [T] int
    joint_set: JointSet | None
    summary: KeypointSummary
    people: np.ndarray | None = None  # [C, T, P, J, 3] all detections (NaN padded)
    person_index: np.ndarray | None = None  # [C, T] chosen person, -1 none
    sources: list[str] = field(default_factory=list)  # folder or file per camera

    @property
    def num_cameras(self) -> int:
        return self.data.shape[0]

    def subset(self, cameras: list[int]) -> "Keypoints2D":
        return Keypoints2D(self.data[cameras], [self.camera_names[i] for i in cameras], self.frame_indices,
                           self.joint_set, self.summary,
                           None if self.people is None else self.people[cameras],
                           None if self.person_index is None else self.person_index[cameras],
                           [self.sources[i] for i in cameras] if self.sources else [])


# ---------------------------------------------------------------------- helpers
def frame_number(path: Path) -> int | None:
    """Frame number of a keypoint file: the last group of digits in its name
    (``cam01.0012.json`` -> 12, ``000012_keypoints.json`` -> 12)."""
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.stem
    stem = re.sub(r"_keypoints$", "", stem)
    groups = _DIGITS.findall(stem)
    if not groups:
        return None
    digits = groups[-1].lstrip("0") or "0"
    if len(digits) > len(str(MAX_FRAME_NUMBER)) or int(digits) >= MAX_FRAME_NUMBER:
        raise MarionetteError(f"{path}: frame number {groups[-1][:30]}{'...' if len(groups[-1]) > 30 else ''} "
                              f"is too large (at most {MAX_FRAME_NUMBER - 1})")
    return int(digits)


def _sanitize(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """Mark invalid joints missing (NaN xy, conf 0); return the count of invalid values."""
    arr = np.array(arr, dtype=np.float64, copy=True)
    conf = arr[..., 2]
    finite = np.isfinite(arr).all(-1)
    negative = np.isfinite(conf) & (conf < 0)
    invalid = ~finite | negative
    # an OpenPose zero triple is "not detected", not an invalid value
    zero = (arr[..., 0] == 0) & (arr[..., 1] == 0) & (conf == 0)
    missing = invalid | (conf <= 0) | zero
    arr[missing, :2] = np.nan
    arr[missing, 2] = 0.0
    return arr, int(invalid.sum())


def _read_json(path: Path):
    return read_json(path, "keypoint file", expect_object=False)


def detect_joint_set(num_joints: int, samples: np.ndarray | None = None) -> tuple[JointSet, str]:
    """Joint set from the number of joints per person; BODY_25 and BODY_25B (both 25)
    are told apart by geometry: BODY_25B's joints 1-2 are eyes next to the nose and 15-16
    ankles far from it, BODY_25 the other way round."""
    if num_joints == 25:
        why = "25 joints and no usable detections; assuming BODY_25B"
        chosen = "BODY_25B"
        if samples is not None:
            s = samples.reshape(-1, 25, 3)
            dist = np.linalg.norm(s[:, :, :2] - s[:, :1, :2], axis=-1)  # [n, 25] distance to joint 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                near = np.nanmean(dist[:, [1, 2]], axis=1)   # BODY_25B: eyes; BODY_25: neck, shoulder
                far = np.nanmean(dist[:, [15, 16]], axis=1)  # BODY_25B: ankles; BODY_25: eyes
                ratio = np.nanmedian(near / far)
            if np.isfinite(ratio):
                chosen = "BODY_25B" if ratio < 1 else "BODY_25"
                why = (f"25 joints; joints 1-2 are {'nearer to' if ratio < 1 else 'farther from'} joint 0 than "
                       f"joints 15-16 (median ratio {ratio:.2f}), so {chosen}")
        return get_joint_set(chosen), f"joint set {chosen} (auto: {why})"
    by_count = {17: "COCO_17", 19: "PANOPTIC_19"}
    if num_joints in by_count:
        return get_joint_set(by_count[num_joints]), f"joint set {by_count[num_joints]} (auto: {num_joints} joints)"
    raise MarionetteError(f"keypoints have {num_joints} joints per person, which matches no known joint set "
                          "(25: BODY_25/BODY_25B, 17: COCO_17, 19: PANOPTIC_19); pass --joint-set")


# ---------------------------------------------------------------------- OpenPose
def _openpose_people(doc, path: Path) -> list[np.ndarray]:
    if not isinstance(doc, dict):
        raise MarionetteError(f"{path}: expected an OpenPose object with field 'people'")
    if "people" not in doc:
        raise MarionetteError(f"{path}: missing field 'people' (expected OpenPose keypoint JSON)")
    people = doc["people"]
    if not isinstance(people, list):
        raise MarionetteError(f"{path}: field 'people' must be a list")
    out = []
    for i, person in enumerate(people):
        if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
            raise MarionetteError(f"{path}: people[{i}] has no field 'pose_keypoints_2d'")
        flat = person["pose_keypoints_2d"]
        if not isinstance(flat, list) or len(flat) % 3 != 0:
            raise MarionetteError(f"{path}: people[{i}].pose_keypoints_2d must be a list of x, y, confidence "
                                  f"triples, got length {len(flat) if isinstance(flat, list) else type(flat).__name__}")
        if not flat:
            continue
        out.append(float_list(flat, f"{path}: people[{i}].pose_keypoints_2d").reshape(-1, 3))
    return out


def list_camera_folders(pose_dir) -> list[Path]:
    pose_dir = Path(pose_dir)
    if not pose_dir.exists():
        raise MarionetteError(f"{pose_dir}: keypoint folder not found")
    if not pose_dir.is_dir():
        raise MarionetteError(f"{pose_dir}: expected a folder with one sub-folder of keypoint JSON per camera")
    folders = sorted((p for p in pose_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: _natural_key(p.name))
    if not folders:
        raise MarionetteError(f"{pose_dir}: no camera sub-folders (expected one folder of OpenPose JSON per camera, "
                              "e.g. cam01_json/cam01.0000.json)")
    return folders


def _natural_key(s: str):
    return [int(p) if p.isdigit() else p.lower() for p in _DIGITS.split(s)]


def read_openpose_folders(folders: list[Path], camera_names: list[str] | None = None,
                          joint_set: str | JointSet | None = None, progress: bool = False) -> Keypoints2D:
    """Read one OpenPose JSON folder per camera (one file per frame)."""
    folders = [Path(f) for f in folders]
    names = camera_names or [f.name for f in folders]
    summary = KeypointSummary(cameras=len(folders))
    per_cam: list[dict[int, list[np.ndarray]]] = []
    files_total = sum(1 for f in folders for p in f.glob("*.json"))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=files_total, desc="reading keypoints", unit="file", leave=False)
    njoints = None
    for folder, name in zip(folders, names):
        if not folder.is_dir():
            raise MarionetteError(f"{folder}: camera keypoint folder not found")
        files = sorted(folder.glob("*.json"), key=lambda p: _natural_key(p.name))
        for p in files:
            if not p.is_file():
                raise MarionetteError(f"{p}: is a folder, not a keypoint file; move it out of the camera folder")
        if not files:
            raise MarionetteError(f"{folder}: empty camera folder (no .json keypoint files)")
        frames: dict[int, list[np.ndarray]] = {}
        origin: dict[int, Path] = {}
        empty = multi = 0
        for path in files:
            t = frame_number(path)
            if t is None:
                raise MarionetteError(f"{path}: file name has no frame number (expected e.g. cam01.0012.json)")
            if t in frames:
                raise MarionetteError(f"{path}: frame number {t} also used by {origin[t].name}; "
                                      "remove stray files from the folder")
            people = _openpose_people(_read_json(path), path)
            for i, p in enumerate(people):
                if njoints is None:
                    njoints = p.shape[0]
                elif p.shape[0] != njoints:
                    raise MarionetteError(f"{path}: people[{i}] has {p.shape[0]} joints, other files have {njoints}")
            frames[t], origin[t] = people, path
            empty += not people
            multi += len(people) > 1
            if bar is not None:
                bar.update()
        summary.files_read += len(files)
        summary.empty_frames_per_camera[name] = empty
        summary.multi_person_frames_per_camera[name] = multi
        per_cam.append(frames)
    if bar is not None:
        bar.close()
    if njoints is None:
        raise MarionetteError(f"no person detected in any keypoint file under {folders[0].parent}")
    return _assemble(per_cam, names, njoints, joint_set, summary, [str(f) for f in folders])


MAX_KEYPOINT_BYTES = 4 << 30  # the assembled [C, T, P, J, 3] float64 detections


def _assemble(per_cam, names, njoints, joint_set, summary, sources) -> Keypoints2D:
    all_frames = sorted(set().union(*[set(f) for f in per_cam]))
    frame_pos = {t: i for i, t in enumerate(all_frames)}
    C, T = len(per_cam), len(all_frames)
    P = max(1, max((len(ps) for f in per_cam for ps in f.values()), default=1))
    # the joint count decides the joint set: check it before allocating anything of that size
    if joint_set is None or (isinstance(joint_set, str) and joint_set.lower() == "auto"):
        if njoints not in (17, 19, 25):
            detect_joint_set(njoints)  # raises the "matches no known joint set" error
    else:
        js = joint_set if isinstance(joint_set, JointSet) else get_joint_set(joint_set)
        if js.num_joints != njoints:
            raise MarionetteError(f"joint set {js.name} has {js.num_joints} joints but the keypoint files have "
                                  f"{njoints} per person")
    if C * T * P * njoints * 3 * 8 > MAX_KEYPOINT_BYTES:
        raise MarionetteError(f"{C} cameras x {T} frames x {P} people per frame x {njoints} joints is more keypoint "
                              f"data than Marionette holds at once ({MAX_KEYPOINT_BYTES >> 30} GiB); split the capture")
    people = np.zeros((C, T, P, njoints, 3))  # zeros = OpenPose's "not detected"
    for c, frames in enumerate(per_cam):
        summary.frames_missing_per_camera[names[c]] = T - len(frames)
        for t, ps in frames.items():
            for p, arr in enumerate(ps):
                people[c, frame_pos[t], p] = arr
    people, invalid = _sanitize(people)
    summary.invalid_values += invalid
    summary.frames = T
    if joint_set is None or (isinstance(joint_set, str) and joint_set.lower() == "auto"):
        js, note = detect_joint_set(njoints, people[..., :3])
    else:
        js = joint_set if isinstance(joint_set, JointSet) else get_joint_set(joint_set)
        note = f"joint set {js.name} (given)"
        if js.num_joints != njoints:
            raise MarionetteError(f"joint set {js.name} has {js.num_joints} joints but the keypoint files have "
                                  f"{njoints} per person")
    summary.joint_set_note = note
    counts = np.isfinite(people[..., 0]).any(-1).sum(-1)  # [C, T] people per frame
    data = people[:, :, 0].copy()
    person_index = np.where(counts > 0, 0, -1)
    return Keypoints2D(data, list(names), np.asarray(all_frames, dtype=np.int64), js, summary,
                       people=people if P > 1 else None, person_index=person_index, sources=sources)


# ---------------------------------------------------------------------- COCO
def read_coco_json(path, camera_name: str | None = None) -> tuple[dict[int, list[np.ndarray]], int]:
    """One camera's COCO keypoints: an annotation file (``images`` + ``annotations``)
    or a results list (``[{image_id, keypoints, score}]``). Frames are numbered by the
    digits in each image's ``file_name`` (else by ``image_id``). Visibility flags of an
    annotation file become confidences 1 (visible), 0.5 (labelled, occluded), 0 (not
    labelled); a results list's third values are already scores."""
    path = Path(path)
    doc = _read_json(path)
    if isinstance(doc, dict):
        if "people" in doc:
            raise MarionetteError(f"{path}: an OpenPose file where a COCO keypoint file per camera was expected; "
                                  "put OpenPose JSON in one sub-folder per camera")
        if "annotations" not in doc:
            raise MarionetteError(f"{path}: missing field 'annotations' (expected COCO keypoint JSON)")
        anns, images, visibility = doc["annotations"], doc.get("images", []), True
    elif isinstance(doc, list):
        anns, images, visibility = doc, [], False
    else:
        raise MarionetteError(f"{path}: expected a COCO object or a results list")
    if not isinstance(anns, list) or not isinstance(images, list):
        raise MarionetteError(f"{path}: fields 'annotations' and 'images' must be lists")
    frame_of = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict) or "id" not in im:
            raise MarionetteError(f"{path}: images[{i}] has no field 'id'")
        if not _is_id(im["id"]):
            raise MarionetteError(f"{path}: images[{i}] field 'id' must be an integer or a string, "
                                  f"got {str(im['id'])[:40]}")
        name = im.get("file_name")
        num = frame_number(Path(name + ".json")) if isinstance(name, str) and name else None
        frame_of[im["id"]] = num if num is not None else _frame_id(im["id"], f"{path}: images[{i}] field 'id'")
    frames: dict[int, list[np.ndarray]] = {}
    njoints = None
    for im_id, t in frame_of.items():
        frames.setdefault(t, [])
    for i, a in enumerate(anns):
        where = f"{path}: annotations[{i}]"
        if not isinstance(a, dict) or "keypoints" not in a or "image_id" not in a:
            raise MarionetteError(f"{where}: expected fields 'image_id' and 'keypoints'")
        flat = a["keypoints"]
        if not isinstance(flat, list) or len(flat) % 3 != 0 or not flat:
            raise MarionetteError(f"{where} field 'keypoints': expected x, y, v triples")
        arr = float_list(flat, f"{where} field 'keypoints'").reshape(-1, 3)
        if visibility:
            v = arr[:, 2]
            arr[:, 2] = np.where(v >= 2, 1.0, np.where(v >= 1, 0.5, np.where(np.isfinite(v) & (v < 0), v, 0.0)))
        if njoints is None:
            njoints = arr.shape[0]
        elif arr.shape[0] != njoints:
            raise MarionetteError(f"{where}: {arr.shape[0]} joints, earlier annotations have {njoints}")
        img = a["image_id"]
        if not _is_id(img):
            raise MarionetteError(f"{where} field 'image_id': expected an integer or a known image id, "
                                  f"got {str(img)[:40]}")
        t = frame_of[img] if img in frame_of else _frame_id(img, f"{where} field 'image_id'")
        frames.setdefault(t, []).append(arr)
    if njoints is None:
        raise MarionetteError(f"{path}: no annotations with keypoints")
    return frames, njoints


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _frame_id(value, what: str) -> int:
    """An image id used as the frame number: a non-negative integer (or a string of digits)."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 10:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not (0 <= value < MAX_FRAME_NUMBER):
        raise MarionetteError(f"{what}: expected a frame number (an integer 0..{MAX_FRAME_NUMBER - 1}) or the id "
                              f"of an image with a numbered file_name, got {str(value)[:40]}")
    return value


def read_coco_cameras(files: list[Path], camera_names: list[str] | None = None,
                      joint_set: str | JointSet | None = None) -> Keypoints2D:
    names = camera_names or [_strip_ext(Path(f).name) for f in files]
    summary = KeypointSummary(cameras=len(files))
    per_cam, nj = [], None
    for f, name in zip(files, names):
        frames, n = read_coco_json(f)
        if nj is not None and n != nj:
            raise MarionetteError(f"{f}: {n} joints per person, other cameras have {nj}")
        nj = n
        per_cam.append(frames)
        summary.files_read += 1
        summary.empty_frames_per_camera[name] = sum(1 for ps in frames.values() if not ps)
        summary.multi_person_frames_per_camera[name] = sum(1 for ps in frames.values() if len(ps) > 1)
    return _assemble(per_cam, names, nj, joint_set, summary, [str(f) for f in files])


def _strip_ext(name: str) -> str:
    return name[:-5] if name.endswith(".json") else name


# ---------------------------------------------------------------------- dispatch
def _is_coco_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", "ignore")
    except OSError:
        return False
    return '"annotations"' in head or ('"image_id"' in head and '"people"' not in head)


def read_keypoints(pose_dir, joint_set: str | JointSet | None = None, progress: bool = False) -> Keypoints2D:
    """Read a keypoint folder: either one sub-folder of OpenPose JSON per camera, or
    one COCO keypoint JSON per camera (``POSE_DIR/<camera>.json``, or a sub-folder per
    camera holding a single COCO file)."""
    pose_dir = Path(pose_dir)
    if not pose_dir.exists():
        raise MarionetteError(f"{pose_dir}: keypoint folder not found")
    if pose_dir.is_dir():
        top_json = sorted((p for p in pose_dir.glob("*.json")), key=lambda p: _natural_key(p.name))
        subdirs = [p for p in pose_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if top_json and not subdirs:  # one COCO file per camera
            return read_coco_cameras(top_json, joint_set=joint_set)
    folders = list_camera_folders(pose_dir)
    singles = [sorted(f.glob("*.json")) for f in folders]
    if all(len(s) == 1 and _is_coco_file(s[0]) for s in singles):
        return read_coco_cameras([s[0] for s in singles], [f.name for f in folders], joint_set)
    return read_openpose_folders(folders, joint_set=joint_set, progress=progress)


# ---------------------------------------------------------------------- camera name matching
def _norm_name(name: str) -> str:
    s = re.sub(r"[^a-z0-9]", "", name.lower())
    for suffix in ("json", "keypoints", "pose", "img", "images", "video"):
        if s.endswith(suffix) and len(s) > len(suffix):
            s = s[: -len(suffix)]
    return s


def match_cameras(folder_names: list[str], camera_names: list[str]) -> tuple[list[int | None], str]:
    """For every keypoint folder, the index of its calibration camera (or None).

    Exact name, then normalised name (``cam01_json`` ~ ``cam_01``), then the camera
    number; if no folder matches by name, folders are paired with cameras in sorted
    order (only when the counts agree). Returns the mapping and a sentence saying how.
    """
    norm_cams = [_norm_name(c) for c in camera_names]
    nums_cams = [(_DIGITS.findall(c) or [None])[-1] for c in camera_names]
    mapping: list[int | None] = []
    for f in folder_names:
        idx = None
        if f in camera_names:
            idx = camera_names.index(f)
        elif norm_cams.count(_norm_name(f)) == 1:
            idx = norm_cams.index(_norm_name(f))
        else:
            num = (_DIGITS.findall(f) or [None])[-1]
            if num is not None:
                hits = [i for i, n in enumerate(nums_cams) if n is not None and int(n) == int(num)]
                if len(hits) == 1:
                    idx = hits[0]
        mapping.append(idx)
    matched = [m for m in mapping if m is not None]
    if len(set(matched)) != len(matched):
        dup = sorted({camera_names[m] for m in matched if matched.count(m) > 1})
        raise MarionetteError(f"several keypoint folders match calibration camera(s) {dup}; rename the folders")
    if matched:
        pairs = ", ".join(f"{f}->{camera_names[m]}" for f, m in zip(folder_names, mapping) if m is not None)
        return mapping, f"keypoint folders matched to calibration cameras by name: {pairs}"
    if len(folder_names) != len(camera_names):
        raise MarionetteError(f"keypoint folders {folder_names} do not match calibration cameras {camera_names} "
                              f"by name, and their counts differ ({len(folder_names)} vs {len(camera_names)}), "
                              "so they cannot be paired in sorted order; rename the folders after the cameras")
    sorted_cams = sorted(range(len(camera_names)), key=lambda i: _natural_key(camera_names[i]))
    order = sorted(range(len(folder_names)), key=lambda i: _natural_key(folder_names[i]))
    mapping = [None] * len(folder_names)
    for fi, ci in zip(order, sorted_cams):
        mapping[fi] = ci
    pairs = ", ".join(f"{folder_names[fi]}->{camera_names[ci]}" for fi, ci in zip(order, sorted_cams))
    return mapping, f"keypoint folder names match no calibration camera; paired in sorted order: {pairs}"

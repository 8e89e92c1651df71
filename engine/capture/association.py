"""Subject association: pick one person consistently across views and time.

Keypoint readers (``engine.io.keypoints``) keep *every* detected person
(``Keypoints2D.people`` [C, T, P, J, 3], NaN-padded). ``select_subject`` picks one:

* a seed frame (``seed_assignment``): for each pair of cameras and each pair of their
  people, the pair is triangulated, projected into the other cameras, and each other
  camera adopts its person nearest to that projection; the assignment seen by the most
  cameras wins, then the one with the most joints, then the one with the lowest mean
  reprojection error (so a bystander seen by fewer cameras loses even when their fewer
  views agree better);
* later and earlier frames are tracked from there by proximity (``track_subject``): the
  previous frame's 3D skeleton is projected into every camera and each camera takes its
  nearest person (if nearer than ``max_distance_px``, ``nearest_people``), after which the
  assignment is re-triangulated; when the track is lost the seed search runs again.

The chosen person per camera and frame is kept in ``person_index`` (-1 = none) and the
summary says how the subject was chosen.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from engine.capture.triangulation import dlt, normalized_observations, reprojection_errors
from engine.io.keypoints import Keypoints2D


@dataclass
class _People:
    """Everything the stages share: all people's keypoints and their normalised observations."""

    people: np.ndarray  # [C, T, P, J, 3] pixels + confidence
    cameras: list
    Rt: np.ndarray  # [C, 3, 4]
    xy: np.ndarray  # [C, T, P, J, 2] normalised image coordinates
    w: np.ndarray  # [C, T, P, J] weights (0 = unusable)
    present: np.ndarray  # [C, T, P] person has any joint (and is still available to be assigned)
    max_distance_px: float
    min_joints: int = 2  # fewest triangulated joints a seed assignment may rest on
    max_pair_error_px: float | None = None  # a seed pair's error limit (default max_distance_px)

    @property
    def num_cameras(self) -> int:
        return self.people.shape[0]


def people_state(people: np.ndarray, cameras, min_confidence: float, max_distance_px: float,
                 min_joints: int = 2) -> _People:
    """The shared state of the stages for people [C, T, P, J, 3] (pixels, confidence).

    A person counts as present in a camera when it has a finite joint, or with ``min_joints`` > 2,
    at least that many usable (confident) joints.
    """
    Rt = np.stack([np.hstack([c.R, c.t[:, None]]) for c in cameras])
    xy, w = normalized_observations(people, cameras, min_confidence)  # [C, T, P, J, 2], [C, T, P, J]
    present = np.isfinite(people[..., 0]).any(-1) if min_joints <= 2 else (w > 0).sum(-1) >= min_joints
    return _People(people, cameras, Rt, xy, w, present, max_distance_px, min_joints)


def triangulate_choice(s: _People, t: int, choice: np.ndarray):
    """choice [C] person index or -1 -> (X [J, 3], mean reprojection error, number of joints triangulated)."""
    C = s.num_cameras
    cs = np.arange(C)
    ch = np.where(choice >= 0, choice, 0)
    xy = s.xy[cs, t, ch]  # [C, J, 2]
    w = np.where((choice >= 0)[:, None], s.w[cs, t, ch], 0.0)
    X = dlt(xy, w, s.Rt)
    err = reprojection_errors(X, np.nan_to_num(s.people[cs, t, ch, :, :2]), s.cameras)
    used = (w > 0) & np.isfinite(X).all(-1)[None]
    n = used.sum()
    e = float(np.where(used, err, 0).sum() / n) if n else np.inf
    return X, e, int(np.isfinite(X).all(-1).sum())


def nearest_people(s: _People, t: int, X: np.ndarray) -> np.ndarray:
    """[C] each camera's person nearest to X's projection at frame ``t``, or -1."""
    choice = np.full(s.num_cameras, -1)
    ok = np.isfinite(X).all(-1)
    if ok.sum() < 2:
        return choice
    for c, cam in enumerate(s.cameras):
        proj = cam.project(X[ok])  # [j, 2]
        d = np.linalg.norm(s.people[c, t][:, ok, :2] - proj[None], axis=-1)  # [P, j]
        d = np.where(s.w[c, t][:, ok] > 0, d, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows = absent people
            med = np.nanmedian(d, axis=1)
        med = np.where(s.present[c, t] & np.isfinite(med), med, np.inf)
        if med.min() < s.max_distance_px:
            choice[c] = int(med.argmin())
    return choice


def seed_assignment(s: _People, t: int) -> np.ndarray | None:
    """[C] the best cross-view consistent assignment at frame ``t`` (see the module docstring), or None."""
    C = s.num_cameras
    best = (np.inf, -1, None, None)
    for a in range(C):
        for b in range(a + 1, C):
            for i in np.flatnonzero(s.present[a, t]):
                for j in np.flatnonzero(s.present[b, t]):
                    choice = np.full(C, -1)
                    choice[a], choice[b] = i, j
                    X, e, nj = triangulate_choice(s, t, choice)
                    limit = s.max_distance_px if s.max_pair_error_px is None else s.max_pair_error_px
                    if nj < s.min_joints or not np.isfinite(e) or e > limit:
                        continue
                    full = nearest_people(s, t, X)
                    full[a], full[b] = i, j
                    X, e, nj = triangulate_choice(s, t, full)
                    # prefer more cameras and joints, then lower error
                    key = (-(full >= 0).sum(), -nj, e)
                    if best[3] is None or key < best[3]:
                        best = (e, t, full, key)
    return best[2]


def track_subject(s: _People, frames, X_ref: np.ndarray | None, choice_all: np.ndarray, bar=None) -> int:
    """Follow the subject through ``frames`` from reference joints ``X_ref``; fills ``choice_all`` [C, T].

    Returns the number of re-seeds (frames where the track was lost)."""
    C = s.num_cameras
    reseeds = 0
    for t in frames:
        ch = nearest_people(s, t, X_ref) if X_ref is not None else np.full(C, -1)
        X, e, nj = triangulate_choice(s, t, ch) if (ch >= 0).sum() >= 2 else (None, np.inf, 0)
        if X is None or not np.isfinite(e) or e > s.max_distance_px:
            seed = seed_assignment(s, t)
            reseeds += 1
            if seed is not None:
                ch = seed
                X, e, nj = triangulate_choice(s, t, ch)
            else:  # nobody seen consistently by two cameras: the frame is missing
                ch, X = np.full(C, -1), None
        choice_all[:, t] = ch
        if X is not None and np.isfinite(X).all(-1).sum() >= 2:
            # keep unseen joints from the previous reference so projection still works
            X_ref = np.where(np.isfinite(X), X, X_ref if X_ref is not None else np.nan)
        if bar is not None:
            bar.update()
    return reseeds


def _gather(people: np.ndarray, choice_all: np.ndarray) -> np.ndarray:
    """[C, T, J, 3] the chosen person per camera and frame; missing where ``choice_all`` is -1."""
    C, T = choice_all.shape
    cs = np.arange(C)[:, None]
    ts = np.arange(T)[None]
    data = people[cs, ts, np.maximum(choice_all, 0)]
    data[choice_all < 0] = np.nan
    data[..., 2] = np.nan_to_num(data[..., 2])
    data[choice_all < 0, :, 2] = 0.0
    return data


def select_subject(kp: Keypoints2D, cameras, min_confidence: float = 0.3, max_distance_px: float | None = None,
                   progress: bool = False) -> Keypoints2D:
    """Pick one consistent subject in multi-person captures (see the module docstring).

    Returns a new Keypoints2D whose ``data`` holds the chosen person per camera and frame
    (missing where a camera does not see the subject) and whose summary says how.
    """
    if kp.people is None or kp.people.shape[2] <= 1:
        if kp.summary.subject_note == "":
            kp.summary.subject_note = "one person per frame and camera: no subject selection needed"
        return kp
    people = kp.people  # [C, T, P, J, 3]
    C, T, P, J, _ = people.shape
    if max_distance_px is None:
        max_distance_px = 0.1 * max(max(c.width, c.height) for c in cameras)
    s = people_state(people, cameras, min_confidence, max_distance_px)
    present = s.present

    choice_all = np.full((C, T), -1)
    multi = (present.sum(-1) > 1).any(0)  # frames where some camera sees several people
    # seed on the frame where the most cameras see somebody, preferring single-person frames
    score = present.any(-1).sum(0) * 2 - multi
    order_seed = int(score.argmax())
    start = seed_assignment(s, order_seed)
    if start is None:
        kp.summary.subject_note = "several people per frame but no cross-view consistent person found; kept person 0"
        return kp
    choice_all[:, order_seed] = start
    X_ref0, _, _ = triangulate_choice(s, order_seed, start)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=T - 1, desc="tracking subject", unit="frame", leave=False)
    reseeds = 0
    for frames in (range(order_seed + 1, T), range(order_seed - 1, -1, -1)):
        reseeds += track_subject(s, frames, X_ref0, choice_all, bar)
    if bar is not None:
        bar.close()
    data = _gather(people, choice_all)
    switched = int(((choice_all > 0) & (present.sum(-1) > 1)).sum())
    dropped = int(((choice_all < 0) & present.any(-1)).sum())
    kp.summary.subject_note = (
        f"{int(multi.sum())} frames have several people: kept the subject whose triangulation reprojects best at "
        f"frame {int(kp.frame_indices[order_seed])}, tracked by proximity ({reseeds} re-seeds); "
        f"{switched} camera-frames use a person other than the file's first, {dropped} camera-frames "
        f"had only other people")
    return Keypoints2D(data, kp.camera_names, kp.frame_indices, kp.joint_set, kp.summary, people, choice_all,
                       kp.sources)

"""Several people: who is who across cameras and over time.

Input: every detected person per camera and frame, ``people`` [C, T, P, J, 3] (pixels,
confidence; NaN-padded), and the calibrated cameras. Per frame, people are associated
across cameras greedily: the pair of detections (two cameras) whose triangulation
reprojects best seeds a person, every other camera adds its detection nearest to that
person's reprojection, the person is re-triangulated, and its detections are used up;
repeat until no pair triangulates within ``max_error_px``. People are then linked over
time by the distance of their root (the mean of their triangulated joints' hips, else of
all joints) with a one-to-one assignment, within ``max_speed`` metres per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.geometry.camera import Camera


@dataclass
class FramePerson:
    frame: int  # row in the people array
    choice: np.ndarray  # [C] person index per camera, -1 = not seen
    joints: np.ndarray  # [J, 3] triangulated (NaN where unseen)
    error: float  # mean reprojection error, pixels


@dataclass
class Subject:
    index: int
    rows: list[int] = field(default_factory=list)  # frame rows it is present in
    people: list[FramePerson] = field(default_factory=list)

    def root(self) -> np.ndarray:
        return np.nanmean(np.stack([_root(p.joints) for p in self.people]), axis=0)

    def mean_cameras(self) -> float:
        return float(np.mean([(p.choice >= 0).sum() for p in self.people]))

    def mean_error(self) -> float:
        return float(np.mean([p.error for p in self.people]))


def _root(X: np.ndarray) -> np.ndarray:
    ok = np.isfinite(X).all(-1)
    return X[ok].mean(0) if ok.any() else np.full(3, np.nan)


def _runs(frames: list[int]) -> str:
    """[0,1,2,5,6] -> '0-2, 5-6'."""
    if not frames:
        return "none"
    out, start, prev = [], frames[0], frames[0]
    for f in frames[1:] + [None]:
        if f is not None and f == prev + 1:
            prev = f
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if f is not None:
            start = prev = f
    return ", ".join(out)


def associate_frame(people_t: np.ndarray, cameras: list[Camera], min_confidence: float = 0.3,
                    max_error_px: float | None = None, min_joints: int = 5) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """People of one frame across cameras. people_t [C, P, J, 3] -> [(choice [C], X [J,3], error)].

    Repeats the subject association's seed stage (``engine.capture.association``), each time
    with the detections already assigned taken out, until no pair of cameras triangulates.
    """
    from engine.capture.association import people_state, seed_assignment, triangulate_choice

    if max_error_px is None:
        # 24 px at 1920: detectors' own per-camera biases are ~10-15 px, while two cameras'
        # detections of *different* people still triangulate, at 40 px and more
        max_error_px = 0.0125 * max(max(c.width, c.height) for c in cameras)
    # other cameras join a seed within twice its error: per-camera detector biases add up
    s = people_state(people_t[:, None], cameras, min_confidence, 2.0 * max_error_px, min_joints)
    s.max_pair_error_px = max_error_px
    out = []
    while True:
        choice = seed_assignment(s, 0)
        if choice is None:
            return out
        X, e, nj = triangulate_choice(s, 0, choice)
        if nj < min_joints or not e <= max_error_px:
            return out
        out.append((choice, X, e))
        for c in np.flatnonzero(choice >= 0):
            s.present[c, 0, choice[c]] = False  # used up


def track_subjects(people: np.ndarray, cameras: list[Camera], fps: float, rows: list[int] | None = None,
                   frame_numbers=None, min_confidence: float = 0.3, max_error_px: float | None = None,
                   max_speed: float = 3.0, progress=None) -> list[Subject]:
    """Subjects over time. people [C, T, P, J, 3]; ``rows``: the frame rows to use (default all);
    ``frame_numbers`` [T]: video frame number of each row (default the row), for speeds."""
    from scipy.optimize import linear_sum_assignment

    C, T = people.shape[:2]
    rows = list(range(T)) if rows is None else list(rows)
    fnum = np.arange(T) if frame_numbers is None else np.asarray(frame_numbers)
    subjects: list[Subject] = []
    last: list[tuple[int, np.ndarray]] = []  # per subject: (row, root)
    for t in rows:
        found = associate_frame(people[:, t], cameras, min_confidence, max_error_px)
        roots = [_root(X) for _, X, _ in found]
        assigned = [-1] * len(found)
        if subjects and found:
            cost = np.full((len(found), len(subjects)), 1e9)
            for i, r in enumerate(roots):
                for s, (row, r0) in enumerate(last):
                    dt = max(1, int(fnum[t] - fnum[row])) / fps
                    d = float(np.linalg.norm(r - r0))
                    if np.isfinite(d) and d <= max_speed * dt + 0.15:
                        cost[i, s] = d
            ii, ss = linear_sum_assignment(cost)
            for i, s in zip(ii, ss):
                if cost[i, s] < 1e9:
                    assigned[i] = int(s)
        for i, (choice, X, e) in enumerate(found):
            s = assigned[i]
            if s < 0:
                subjects.append(Subject(index=len(subjects)))
                last.append((t, roots[i]))
                s = len(subjects) - 1
            subjects[s].rows.append(t)
            subjects[s].people.append(FramePerson(t, choice, X, e))
            last[s] = (t, roots[i])
        if progress is not None:
            progress(1)
    # most present first; the index a user passes to --subject is this order
    subjects.sort(key=lambda s: (-len(s.rows), -s.mean_cameras(), s.mean_error()))
    for k, s in enumerate(subjects):
        s.index = k
    return subjects


def describe_subjects(subjects: list[Subject], frame_numbers) -> list[str]:
    """One line per subject: index, frames present, mean root position (metres)."""
    lines = []
    for s in subjects:
        r = s.root()
        frames = [int(frame_numbers[t]) for t in s.rows]
        lines.append(f"subject {s.index}: {len(frames)} frames ({_runs(frames)}), mean root "
                     f"x {r[0]:+.2f} y {r[1]:+.2f} z {r[2]:+.2f} m, seen by {s.mean_cameras():.1f} cameras on average, "
                     f"reprojection {s.mean_error():.1f} px")
    return lines


def subject_keypoints(people: np.ndarray, subject: Subject) -> np.ndarray:
    """The chosen subject's detections [C, T, J, 3] (NaN / confidence 0 where not seen)."""
    C, T, P, J, _ = people.shape
    out = np.full((C, T, J, 3), np.nan)
    out[..., 2] = 0.0
    for fp in subject.people:
        for c in range(C):
            if fp.choice[c] >= 0:
                out[c, fp.frame] = people[c, fp.frame, fp.choice[c]]
    return out

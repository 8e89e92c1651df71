"""An ``smplx.SMPL`` built from our arrays: the reference implementation tests compare against.

``smplx`` is not a runtime dependency (it is in the ``test`` extra); it is imported only when called.
"""

from __future__ import annotations

import contextlib
import io

from engine.body.smpl.model import SMPLModelData


# ------------------------------------------------------------------------------------------
# smplx interop


def smplx_vertex_ids(data: SMPLModelData) -> dict:
    """The ``vertex_ids`` table smplx wants, from our landmarks (0 where a landmark is unknown)."""
    lm = data.landmarks
    get = lambda n: int(lm.get(n, 0))  # noqa: E731
    ids = {"nose": get("nose"), "reye": get("right_eye"), "leye": get("left_eye"), "rear": get("right_ear"),
           "lear": get("left_ear"), "LBigToe": get("left_big_toe"), "LSmallToe": get("left_small_toe"),
           "LHeel": get("left_heel"), "RBigToe": get("right_big_toe"), "RSmallToe": get("right_small_toe"),
           "RHeel": get("right_heel")}
    for side in "lr":
        for tip in ("thumb", "index", "middle", "ring", "pinky"):
            ids[side + tip] = 0
    return ids


def to_smplx(data: SMPLModelData, device="cpu", batch_size: int = 1, num_betas: int | None = None,
             dtype=None):
    """An ``smplx.SMPL`` built from the arrays (no file read by smplx)."""
    import smplx
    import torch
    from smplx.utils import Struct

    struct = Struct(v_template=data.v_template, shapedirs=data.shapedirs, posedirs=data.posedirs,
                    J_regressor=data.J_regressor, weights=data.weights, kintree_table=data.kintree_table,
                    f=data.f)
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning for 10-component models
        model = smplx.SMPL(model_path="", data_struct=struct, gender=data.gender, batch_size=batch_size,
                           num_betas=num_betas or min(10, data.num_betas), vertex_ids=smplx_vertex_ids(data),
                           use_hands=False, dtype=dtype or torch.float32)
    return model.to(device)



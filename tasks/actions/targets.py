"""The seed's training targets (`dm_pretrain_process.py`): `frame_i_y`, `_xaux`, `_helperarr`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.action_space import (
    AUX_STEP_WIDTH,
    AUX_STEPS,
    AUX_WIDTH,
    MOUSE_X_BINS,
    MOUSE_Y_BINS,
    N_CLICKS,
    N_KEYS,
    Y_WIDTH,
    Y,
    quantise,
)
from tasks.actions.infer import InferredActions, frame_index


def helper_flags(state: pa.Table, lengths: np.ndarray) -> np.ndarray:
    """(n, 2) `[kill, death]`: one counter rose by exactly one while the other stayed."""
    kills = state.column("gsi_kills").to_numpy()
    deaths = state.column("gsi_deaths").to_numpy()
    pk, pd = np.concatenate([kills[:1], kills[:-1]]), np.concatenate([deaths[:1], deaths[:-1]])
    not_first = frame_index(lengths)[1] > 0
    kill = not_first & (kills == pk + 1) & (deaths == pd)
    death = not_first & (deaths == pd + 1) & (kills == pk)
    return np.stack([kill, death], axis=1).astype(np.float64)


def training_targets(
    actions: InferredActions, state: pa.Table, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(y, xaux, helperarr)` per frame as the public HDF5 files store them."""
    n = len(actions.mouse_x)
    # a move nothing could tell (no view angles, no recorded counts) goes to the 0 bin
    qx = quantise(np.nan_to_num(actions.mouse_x), MOUSE_X_BINS)
    qy = quantise(np.nan_to_num(actions.mouse_y), MOUSE_Y_BINS)
    y = np.zeros((n, Y_WIDTH))
    y[:, Y.keys] = actions.key_matrix
    y[:, Y.lclick] = actions.lclick
    y[:, Y.rclick] = actions.rclick
    rows = np.arange(n)
    y[rows, Y.mouse_x.start + qx] = 1
    y[rows, Y.mouse_y.start + qy] = 1

    step = np.column_stack(
        [
            y[:, : N_KEYS + N_CLICKS],
            MOUSE_X_BINS[qx] / MOUSE_X_BINS[-1],
            MOUSE_Y_BINS[qy] / MOUSE_Y_BINS[-1],
            state.column("gsi_health").to_numpy() / 100,
            # GSI's clip count where memory was not read (csdm-agent recordings)
            pc.coalesce(state.column("ammo_active"), state.column("gsi_ammo"))
            .fill_null(0)
            .to_numpy()
            / 30,
            (state.column("gsi_team").to_numpy(zero_copy_only=False) == "CT").astype(np.float64),
        ]
    )
    assert step.shape[1] == AUX_STEP_WIDTH
    local = frame_index(lengths)[1]
    xaux = np.zeros((n, AUX_WIDTH))
    for j in range(AUX_STEPS):  # j steps back, only as far as the episode goes
        src = rows - j - 1
        has = local >= j + 1
        xaux[has, j * AUX_STEP_WIDTH : (j + 1) * AUX_STEP_WIDTH] = step[src[has]]
    return y, xaux, helper_flags(state, lengths)

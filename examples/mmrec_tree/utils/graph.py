import numpy as np
import torch


def normalised_adjacency(inter_matrix, n_users, n_items):
    """Symmetrically normalised user-item adjacency (users first) as a sparse torch tensor."""
    rows = np.concatenate([inter_matrix.row, inter_matrix.col + n_users])
    cols = np.concatenate([inter_matrix.col + n_users, inter_matrix.row])
    degree = np.bincount(rows, minlength=n_users + n_items).astype(np.float32) + 1e-7
    values = degree[rows] ** -0.5 * degree[cols] ** -0.5
    index = torch.as_tensor(np.stack([rows, cols]), dtype=torch.long)
    return torch.sparse_coo_tensor(index, torch.as_tensor(values), (n_users + n_items,) * 2,
                                   check_invariants=False).coalesce()

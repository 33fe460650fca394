"""Run the authors' MMSSL code (HKUDS/MMSSL, unmodified files) on CPU next to clear_tune's port, on tiny data.

Shims (outside their files): Tensor.cuda / Module.cuda are the identity; dgl, visdom and torch.utils.tensorboard
and sklearn.metrics are stub modules (imported by main.py, unused by a training step). Dropout rates are 0 so that
the only random draws are the Gumbel U and the penalty's alpha, which both sides draw from the same generator state.
The authors' code is not installable here as a whole (its main.py needs DGL, whose PyPI wheels stop at 2.1.0, built
for torch <= 2.2, not this project's torch 2.13), so this compares their model and training step, batch by batch.

    MMSSL_PEER=/path/to/HKUDS/MMSSL/MMSSL .venv/bin/python benchmarks/replay_mmssl_authors.py [m_topk_rate] [T]

MMSSL_PEER defaults to .peers/mmssl/MMSSL (a checkout of github.com/HKUDS/MMSSL: the folder holding Models.py).
"""

import json
import os
import pickle
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

PEER = os.environ.get("MMSSL_PEER", str(Path(__file__).resolve().parents[1] / ".peers" / "mmssl" / "MMSSL"))
topk_rate = sys.argv[1] if len(sys.argv) > 1 else "0.0001"
T = sys.argv[2] if len(sys.argv) > 2 else "1"
torch.set_num_threads(1)

from clear_tune.config import TrainConfig  # noqa: E402
from clear_tune.data import make_synthetic  # noqa: E402
from clear_tune.models import ModelContext, build_model  # noqa: E402

ds = make_synthetic(n_users=40, n_items=24, d_v=12, d_t=8, pref_dim=4, seed=3)
M, N = ds.n_users, ds.n_items
B = 16
folder = tempfile.mkdtemp()
os.makedirs(f"{folder}/tiny")


def as_json(pairs):
    out = {str(u): [] for u in range(M)}
    for u, i in pairs:
        out[str(int(u))].append(int(i))
    return out


train = np.asarray(ds.train)
for name, pairs in (("train", train), ("val", ds.valid), ("test", ds.test)):
    json.dump(as_json(np.asarray(pairs)), open(f"{folder}/tiny/{name}.json", "w"))
np.save(f"{folder}/tiny/image_feat.npy", np.asarray(ds.image_feat, dtype=np.float32))
np.save(f"{folder}/tiny/text_feat.npy", np.asarray(ds.text_feat, dtype=np.float32))
mat = sp.csr_matrix((np.ones(len(train), dtype=np.float32), (train[:, 0], train[:, 1])), shape=(M, N))
pickle.dump(mat, open(f"{folder}/tiny/train_mat", "wb"))

import importlib.machinery  # noqa: E402

import torch._dynamo  # noqa: E402,F401  (before the stubs: it scans installed modules on import)

torch.Tensor.cuda = lambda self, *a, **k: self
torch.nn.Module.cuda = lambda self, *a, **k: self
for stub in ("dgl", "visdom"):
    sys.modules[stub] = types.ModuleType(stub)
    sys.modules[stub].__spec__ = importlib.machinery.ModuleSpec(stub, None)
sklearn, sk_metrics = types.ModuleType("sklearn"), types.ModuleType("sklearn.metrics")
sk_metrics.roc_auc_score = None  # utility/metrics.py imports it; evaluation is not run here
sys.modules["sklearn"], sys.modules["sklearn.metrics"] = sklearn, sk_metrics
tb = types.ModuleType("torch.utils.tensorboard")
tb.SummaryWriter = object
sys.modules["torch.utils.tensorboard"] = tb
sys.argv = [
    "main.py",
    "--data_path",
    folder + "/",
    "--dataset",
    "tiny",
    "--batch_size",
    str(B),
    "--drop_rate",
    "0",
    "--G_drop1",
    "0",
    "--G_drop2",
    "0",
    "--debug",
    "--m_topk_rate",
    topk_rate,
    "--T",
    T,
]
sys.path.insert(0, PEER)
os.chdir(PEER)
import main as ref  # noqa: E402  (the authors' main.py)

args = ref.args
SEED = 7
ref.set_seed(SEED)
trainer = ref.Trainer(data_config={})
theirs, D = trainer.model, trainer.D

options = {"drop_rate": 0.0, "G_drop1": 0.0, "G_drop2": 0.0, "m_topk_rate": float(topk_rate), "T": int(T)}
ctx = ModelContext(
    M,
    N,
    torch.as_tensor(train[:, 0]),
    torch.as_tensor(train[:, 1]),
    torch.as_tensor(np.asarray(ds.image_feat, dtype=np.float32)),
    torch.as_tensor(np.asarray(ds.text_feat, dtype=np.float32)),
    torch.device("cpu"),
)
cfg = TrainConfig(backbone="mmssl", emb_dim=64, seed=SEED, projection={"mode": "off"}, model_options=options)
ours = build_model(cfg, ctx)
optim = torch.optim.Adam(ours.parameters(), lr=args.lr, weight_decay=0.01, decoupled_weight_decay=True)


def report(name, a, b):
    gap = (a - b).abs().max().item()
    scale = b.abs().max().item()
    print(f"{name:34s} max|diff| {gap:.3e}   (max|ref| {scale:.3e}){'   EXACT' if gap == 0 else ''}")


# ---- initial weights: the same seed, the same draws
report("init user_id_embedding", ours.user_emb.weight[0], theirs.user_id_embedding.weight)
report("init item_id_embedding", ours.item_emb.weight[0], theirs.item_id_embedding.weight)
report("init image_trans.weight", ours.image_encoder.weight[0].T, theirs.image_trans.weight)
report("init text_trans.bias", ours.text_encoder.bias[0], theirs.text_trans.bias)
report("init w_self_attention_cat", ours.w_cat[0], theirs.weight_dict["w_self_attention_cat"])
report("init D layer 1 weight", ours.disc.w1[0].T, D.net[0].weight)
report("init D layer 3 weight", ours.disc.w3[0].T, D.net[8].weight)


def compare_evaluation(when: str) -> None:
    """Both sides' evaluation embeddings (users, items), in eval mode, against each other."""
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        graphs = ("ui_graph", "iu_graph", "image_ui_graph", "image_iu_graph", "text_ui_graph", "text_iu_graph")
        ua, ia, *_ = theirs(*(getattr(trainer, g) for g in graphs))
        u, i = ours.embeddings()
    report(f"eval users {when}", u[0], ua)
    report(f"eval items {when}", i[0], ia)


# ---- eval forward
compare_evaluation("(initial graphs)")

# ---- training batches: the body of the authors' Trainer.train loop (main.py), batch by batch
rng = np.random.default_rng(0)
ours.train()
ours.start_epoch(1)
trainer.image_ui_index = {"x": [], "y": []}
trainer.text_ui_index = {"x": [], "y": []}
for idx in range(4):
    users = sorted(rng.choice(M, B, replace=False).tolist())
    pos = [int(rng.choice(np.flatnonzero(mat[u].toarray()[0]))) for u in users]
    neg = [int(rng.choice(np.flatnonzero(mat[u].toarray()[0] == 0))) for u in users]
    torch.set_rng_state(ours.generator.get_state())  # the authors draw U and alpha from the global RNG
    self = trainer
    theirs.train()
    with torch.no_grad():
        ua, ia, img_i, txt_i, img_u, txt_u, *_ = theirs(
            self.ui_graph,
            self.iu_graph,
            self.image_ui_graph,
            self.image_iu_graph,
            self.text_ui_graph,
            self.text_iu_graph,
        )
    ui_sim = self.u_sim_calculation(users, ua, ia).detach()
    inputf = torch.cat(
        (self.u_sim_calculation(users, img_u, img_i).detach(), self.u_sim_calculation(users, txt_u, txt_i).detach()),
        dim=0,
    )
    lossf = D(inputf).mean()
    u_ui = torch.tensor(self.ui_graph_raw[users].todense())
    u_ui = F.softmax(
        u_ui
        - args.log_log_scale
        * torch.log(
            -torch.log(torch.empty((u_ui.shape[0], u_ui.shape[1]), dtype=torch.float32).uniform_(0, 1) + 1e-8) + 1e-8
        )
        / args.real_data_tau,
        dim=1,
    )
    u_ui += ui_sim * args.ui_pre_scale
    u_ui = F.normalize(u_ui, dim=1)
    inputr = torch.cat((u_ui, u_ui), dim=0)
    lossr = -D(inputr).mean()
    gp = self.gradient_penalty(D, inputr, inputf.detach())
    loss_D = lossr + lossf + args.gp_rate * gp
    self.optim_D.zero_grad()
    loss_D.backward()
    self.optim_D.step()

    G_ua, G_ia, G_img_i, G_txt_i, G_img_u, G_txt_u, G_user_emb, _, G_img_u_id, G_txt_u_id, _, _ = theirs(
        self.ui_graph, self.iu_graph, self.image_ui_graph, self.image_iu_graph, self.text_ui_graph, self.text_iu_graph
    )
    mf, emb, reg = self.bpr_loss(G_ua[users], G_ia[pos], G_ia[neg])
    G_img_sim = self.u_sim_calculation(users, G_img_u, G_img_i)
    G_txt_sim = self.u_sim_calculation(users, G_txt_u, G_txt_i)
    if idx % args.T == 0 and idx != 0:
        for m in ("image", "text"):
            index = getattr(self, f"{m}_ui_index")
            tmp = sp.csr_matrix(
                (torch.ones(len(index["x"])), (index["x"], index["y"])), shape=(self.n_users, self.n_items)
            )
            setattr(self, f"{m}_ui_graph", self.sparse_mx_to_torch_sparse_tensor(self.csr_norm(tmp, mean_flag=True)))
            setattr(self, f"{m}_iu_graph", self.sparse_mx_to_torch_sparse_tensor(self.csr_norm(tmp.T, mean_flag=True)))
        self.image_ui_index = {"x": [], "y": []}
        self.text_ui_index = {"x": [], "y": []}
    else:
        k = int(self.n_items * args.m_topk_rate)
        for m, sim in (("image", G_img_sim), ("text", G_txt_sim)):
            _, ids = torch.topk(sim.detach(), k, dim=-1)
            getattr(self, f"{m}_ui_index")["x"] += np.array(torch.tensor(users).repeat(1, k).view(-1)).tolist()
            getattr(self, f"{m}_ui_index")["y"] += np.array(ids.cpu().view(-1)).tolist()
    feat = self.feat_reg_loss_calculation(G_img_i, G_txt_i, G_img_u, G_txt_u)
    cl = self.batched_contrastive_loss(G_img_u_id[users], G_user_emb[users]) + self.batched_contrastive_loss(
        G_txt_u_id[users], G_user_emb[users]
    )
    G_lossf = -(D(torch.cat((G_img_sim, G_txt_sim), dim=0))).mean()
    batch_loss = mf + emb + reg + feat + args.cl_rate * cl + args.G_rate * G_lossf
    self.optimizer_D.zero_grad()
    batch_loss.backward()
    self.optimizer_D.step()

    mine = ours.loss(torch.tensor(users), torch.tensor(pos), torch.tensor(neg))
    optim.zero_grad()
    mine.sum().backward()
    optim.step()
    print(f"-- batch {idx}: loss ours {mine.item():.7f} theirs {batch_loss.item():.7f}  (cl ref {cl.item():.5f})")
    report("  D layer 1 weight after D step", ours.disc.w1[0].T, D.net[0].weight)
    report("  D BN1 weight after D step", ours.disc.gamma1[0], D.net[2].weight)
    report("  user table after AdamW", ours.user_emb.weight[0], theirs.user_id_embedding.weight)
    report("  w_cat after AdamW", ours.w_cat[0], theirs.weight_dict["w_self_attention_cat"])
    report("  image_trans after AdamW", ours.image_encoder.weight[0].T, theirs.image_trans.weight)

compare_evaluation("after 4 batches")

"""TinyRec: a small FREEDOM-like model (ID embeddings propagated over the user-item graph with edge dropout,
plus trainable item features encoded by image_trs / text_trs) written against the MMRec model API."""

import numpy as np
import torch
from torch import nn

from common.abstract_recommender import GeneralRecommender
from common.loss import BPRLoss, EmbLoss
from utils.graph import normalised_adjacency


class TinyRec(GeneralRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_dim = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.dropout = config["dropout"]
        interactions = dataset.inter_matrix(form="coo").astype(np.float32)
        self.norm_adj = normalised_adjacency(interactions, self.n_users, self.n_items).to(self.device)
        self.masked_adj = self.norm_adj
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_dim)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.image_embedding = nn.Embedding.from_pretrained(self.v_feat, freeze=False)
        self.text_embedding = nn.Embedding.from_pretrained(self.t_feat, freeze=False)
        self.image_trs = nn.Linear(self.v_feat.shape[1], self.embedding_dim)
        self.text_trs = nn.Linear(self.t_feat.shape[1], self.embedding_dim)
        self.bpr, self.emb_loss = BPRLoss(), EmbLoss()

    def pre_epoch_processing(self):
        if self.dropout <= 0:
            self.masked_adj = self.norm_adj
            return
        index, values = self.norm_adj.indices(), self.norm_adj.values()
        keep = torch.multinomial(torch.ones_like(values), int(values.numel() * (1 - self.dropout)))
        self.masked_adj = torch.sparse_coo_tensor(index[:, keep], values[keep], self.norm_adj.shape,
                                                  check_invariants=False).coalesce()

    def forward(self, adj):
        content = self.image_trs(self.image_embedding.weight) + self.text_trs(self.text_embedding.weight)
        ego = torch.cat([self.user_embedding.weight, self.item_id_embedding.weight + content], dim=0)
        layers = [ego]
        for _ in range(self.n_layers):
            layers.append(torch.sparse.mm(adj, layers[-1]))
        out = torch.stack(layers, dim=1).mean(dim=1)
        return torch.split(out, [self.n_users, self.n_items])

    def calculate_loss(self, interaction):
        users, pos_items, neg_items = interaction[0], interaction[1], interaction[2]
        user_e, item_e = self.forward(self.masked_adj)
        u, p, n = user_e[users], item_e[pos_items], item_e[neg_items]
        loss = self.bpr((u * p).sum(1), (u * n).sum(1))
        return loss + self.reg_weight * self.emb_loss(u, p, n)

    def full_sort_predict(self, interaction):
        user_e, item_e = self.forward(self.norm_adj)
        return user_e[interaction[0]] @ item_e.T

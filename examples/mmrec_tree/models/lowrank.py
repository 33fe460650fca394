"""LowRank: item features projected by bare weight matrices (``torch.mm(features, W)``, as MMRec's LGMRec
writes its encoders) and a tuple loss: a model whose encoders are parameters, not submodules."""

import torch
from torch import nn

from common.abstract_recommender import GeneralRecommender


class LowRank(GeneralRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = config["embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.image_embedding = nn.Embedding.from_pretrained(self.v_feat, freeze=True)
        self.text_embedding = nn.Embedding.from_pretrained(self.t_feat, freeze=True)
        self.item_image_trs = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(self.v_feat.shape[1], d)))
        self.item_text_trs = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(self.t_feat.shape[1], d)))

    def items(self):
        image = torch.mm(self.image_embedding.weight, self.item_image_trs)
        text = torch.mm(self.text_embedding.weight, self.item_text_trs)
        return image + text

    def calculate_loss(self, interaction):
        items = self.items()
        u = self.user_embedding[interaction[0]]
        pos, neg = items[interaction[1]], items[interaction[2]]
        bpr = -torch.nn.functional.logsigmoid((u * (pos - neg)).sum(1)).mean()
        return bpr, self.reg_weight * (u.pow(2).sum(1).mean())

    def full_sort_predict(self, interaction):
        return self.user_embedding[interaction[0]] @ self.items().T

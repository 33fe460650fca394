import torch
from torch import nn


class BPRLoss(nn.Module):
    def forward(self, pos_score, neg_score):
        return -torch.log(1e-10 + torch.sigmoid(pos_score - neg_score)).mean()


class EmbLoss(nn.Module):
    def forward(self, *embeddings):
        return sum(torch.norm(e, p=2) for e in embeddings) / embeddings[-1].shape[0]

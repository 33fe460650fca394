"""The base classes an MMRec-API model derives from (written for this example tree, same contract as MMRec's)."""

import os

import numpy as np
import torch
from torch import nn


class AbstractRecommender(nn.Module):
    def pre_epoch_processing(self):
        pass

    def post_epoch_processing(self):
        pass

    def calculate_loss(self, interaction):
        raise NotImplementedError

    def full_sort_predict(self, interaction):
        raise NotImplementedError


class GeneralRecommender(AbstractRecommender):
    """Reads the counts from ``dataloader.dataset`` and the feature files from ``data_path + dataset``."""

    def __init__(self, config, dataloader):
        super().__init__()
        self.n_users = dataloader.dataset.get_user_num()
        self.n_items = dataloader.dataset.get_item_num()
        self.batch_size = config["train_batch_size"]
        self.device = config["device"]
        self.v_feat, self.t_feat = None, None
        if not config["end2end"] and config["is_multimodal_model"]:
            folder = os.path.abspath(config["data_path"] + config["dataset"])
            for attribute, key in (("v_feat", "vision_feature_file"), ("t_feat", "text_feature_file")):
                path = os.path.join(folder, config[key])
                if os.path.isfile(path):
                    setattr(self, attribute, torch.from_numpy(np.load(path)).float().to(self.device))
            assert self.v_feat is not None or self.t_feat is not None, "no features"

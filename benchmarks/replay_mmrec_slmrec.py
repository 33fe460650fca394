"""Exact replay of MMRec's SLMRec in clear-tune (issue 18): same initial weights, same batches, epoch by epoch.

Two halves, one per venv, both reading the parity folder that ``bench_mmrec_parity.py --users N`` writes:

    cd .peers/mmrec/src/src && ../../venv/bin/python /ABS/benchmarks/replay_mmrec_slmrec.py record \\
        --folder /ABS/.peers/datasets/parity_baby_u1000 --seed 999 --epochs 5 --out /tmp/peer999.pt
    .venv/bin/python benchmarks/replay_mmrec_slmrec.py replay --folder .peers/datasets/parity_baby_u1000 \\
        --record /tmp/peer999.pt

``record`` runs MMRec's own SLMRec, Trainer and data loaders at the parity point (lr 1e-3, ssl_temp 0.2,
ssl_alpha 0.1) and saves its initial state_dict, every (user, positive) batch, every batch loss, every
epoch's valid R@20 and state_dict. ``replay`` copies those weights into ours, feeds it the same batches
through our Adam, and prints both losses, both valid R@20 and the largest weight difference per epoch.
On the 1,000-user Baby subset (seed 999, 5 epochs) both agree: losses to 1e-6, valid R@20 to 4 digits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

POINT = {"reg": 1e-4, "learning_rate": 1e-3, "ssl_temp": 0.2, "ssl_alpha": 0.1}


def record(folder: Path, seed: int, epochs: int, out: Path) -> None:  # MMRec's venv, cwd MMRec's src/
    import torch

    sys.path.insert(0, os.getcwd())
    import common.trainer as mmrec_trainer
    from utils.configurator import Config
    from utils.dataloader import EvalDataLoader, TrainDataLoader
    from utils.dataset import RecDataset
    from utils.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(1)
    name = folder.name
    overrides = {
        "epochs": epochs, "seed": seed, "use_gpu": False, "gpu_id": 0, "data_path": f"{folder.parent}/",
        "metrics": ["Recall"], "topk": [20], "save_recommended_topk": False, "USER_ID_FIELD": "userID",
        "ITEM_ID_FIELD": "itemID", "TIME_FIELD": "timestamp", "filter_out_cod_start_users": True,
        "vision_feature_file": "image_feat.npy", "text_feature_file": "text_feat.npy",
        "inter_file_name": f"{name}.inter", "stopping_step": 10_000, **POINT,
    }  # fmt: skip
    config = Config("SLMRec", name, overrides, False)
    dataset = RecDataset(config)
    str(dataset)  # MMRec's __str__ sets inter_num, which its loaders read
    train, valid, test = dataset.split()
    for part in (train, valid, test):
        str(part)
    train_data = TrainDataLoader(config, train, batch_size=config["train_batch_size"], shuffle=True)
    valid_data = EvalDataLoader(config, valid, additional_dataset=train, batch_size=config["eval_batch_size"])
    test_data = EvalDataLoader(config, test, additional_dataset=train, batch_size=config["eval_batch_size"])
    init_seed(seed)  # as quick_start does per grid point
    train_data.pretrain_setup()
    model = get_model("SLMRec")(config, train_data)
    rec: dict = {"init": {k: v.clone() for k, v in model.state_dict().items()}, "batches": [], "losses": []}
    rec.update(valid=[], states=[])
    calculate_loss = model.calculate_loss

    def recording_loss(interaction):
        rec["batches"].append(interaction[:2].clone())
        loss = calculate_loss(interaction)
        rec["losses"].append(float(loss.detach()))
        return loss

    model.calculate_loss = recording_loss
    valid_epoch = mmrec_trainer.Trainer._valid_epoch

    def recording_valid(self, data):
        score, result = valid_epoch(self, data)
        if data is valid_data:
            rec["valid"].append(float(result["recall@20"]))
            rec["states"].append({k: v.clone() for k, v in model.state_dict().items()})
        return score, result

    mmrec_trainer.Trainer._valid_epoch = recording_valid
    get_trainer()(config, model, False).fit(train_data, valid_data=valid_data, test_data=test_data, saved=False)
    torch.save(rec, out)
    print("MMRec valid R@20 per epoch:", " ".join(f"{v:.4f}" for v in rec["valid"]))


def ours_name(key: str) -> tuple[str, bool]:
    """Our parameter name for an MMRec state_dict key, and whether it is an nn.Linear weight (stored transposed)."""
    renamed = {
        "embedding_user": "user_emb", "embedding_item": "item_emb", "v_dense": "image_encoder",
        "t_dense": "text_encoder", "embedding_user_after_GCN": "user_fuse", "embedding_item_after_GCN": "item_fuse",
    }  # fmt: skip
    module, attr = key.rsplit(".", 1)
    linear = module not in ("embedding_user", "embedding_item") and attr == "weight"
    return f"{renamed.get(module, module)}.{attr}", linear


def replay(folder: Path, path: Path) -> None:
    import torch

    from clear_tune.config import TrainConfig
    from clear_tune.train import Trainer

    torch.set_num_threads(1)
    rec = torch.load(path, weights_only=False)
    cfg = TrainConfig(
        data=f"mmrec:{folder}", backbone="slmrec", projection={"mode": "off"}, emb_dim=64, batch_size=2048,
        epochs=len(rec["valid"]), patience=100, device="cpu", threads=1, lr=1e-3, reg_weight=1e-4,
        model_options={"ssl_temp": 0.2, "ssl_alpha": 0.1},
    )  # fmt: skip
    trainer = Trainer(cfg)
    model = trainer.model
    params = dict(model.named_parameters())

    def pairs(state: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:  # (ours, MMRec's in our layout)
        out = []
        for key, value in state.items():
            if key == "norm_adj" or key.startswith("g_a_iva"):  # the graph buffer; the unused audio head
                continue
            name, linear = ours_name(key)
            out.append((params[name][0], value.T if linear else value))
        return out

    with torch.no_grad():
        for ours, theirs in pairs(rec["init"]):
            ours.copy_(theirs)
    per_epoch = len(rec["batches"]) // len(rec["valid"])
    for epoch, want in enumerate(rec["valid"], 1):
        model.train()
        model.start_epoch(epoch)
        for b in range((epoch - 1) * per_epoch, epoch * per_epoch):
            users, pos = rec["batches"][b]
            loss = model.loss(users, pos, pos)  # negatives: unused by SLMRec
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            trainer.optimizer.step()
            print(f"  batch {b}: loss ours {float(loss[0].detach()):.6f}  MMRec {rec['losses'][b]:.6f}")
        valid, _ = trainer.evaluate()
        drift = max(float((o.detach() - t).abs().max()) for o, t in pairs(rec["states"][epoch - 1]))
        print(f"epoch {epoch}: valid R@20 ours {valid['recall@20']:.4f}  MMRec {want:.4f}  max |w diff| {drift:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["record", "replay"])
    parser.add_argument("--folder", type=Path, required=True, help="the parity folder (ROOT/NAME)")
    parser.add_argument("--seed", type=int, default=999)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="record: where to save")
    parser.add_argument("--record", type=Path, help="replay: a file saved by record")
    args = parser.parse_args()
    if args.mode == "record":
        record(args.folder.resolve(), args.seed, args.epochs, args.out or Path(f"slmrec_peer{args.seed}.pt"))
    else:
        replay(args.folder, args.record)


if __name__ == "__main__":
    main()

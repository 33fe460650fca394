#!/usr/bin/env bash
# MENTOR (Jinfeng-Xu/MENTOR, the authors' MMRec-based code) as a peer beside clear-tune, for bench_own_model.py.
#
#   benchmarks/setup_mentor_peer.sh MENTOR_GIT_DIR [DEST=.peers/mentor]
#
# MENTOR_GIT_DIR: a checkout or bare mirror of Jinfeng-Xu/MENTOR (the search tool's `fetch` prints one). It reuses the
# MMRec peer's venv (.peers/mmrec/venv: torch 2.13.0, torch_geometric). Compatibility fixes only, no change to the
# model's math (the same kinds the MMRec peer kit applies):
#   1. models/mentor.py calls .cuda() on its perturbation noise even on a CPU: follow the tensor's own device;
#   2. numpy >= 1.24 removed np.float (utils_package/metrics.py);
#   3. scipy >= 1.12 removed dok_matrix._update (common/encoders.py);
#   4. run_peer.py (the MMRec kit's driver) pointed at MENTOR's utils_package instead of utils;
#   5. utils_package/data_utils.py imports torchvision for raw-image helpers that training never calls (features are
#      precomputed .npy files): the import is made optional, as torchvision is not in the MMRec peer's venv.
set -euo pipefail
src=${1:?usage: setup_mentor_peer.sh MENTOR_GIT_DIR [DEST]}; dest=${2:-.peers/mentor}
here=$(cd "$(dirname "$0")/.." && pwd)
src=$(cd "$src" && pwd); mkdir -p "$dest"; dest=$(cd "$dest" && pwd)
[ -d "$dest/src/.git" ] || git clone -q "$src" "$dest/src"
cd "$dest/src/src"
sed -i 's/torch\.rand_like(h)\.cuda()/torch.rand_like(h)/' models/mentor.py
perl -pi -e 's/\bnp\.float\b(?![\d_])/float/g' utils_package/metrics.py
sed -i 's/\._update(/._dict.update(/' common/encoders.py
python3 - utils_package/data_utils.py <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
block = ("import torchvision.transforms as transforms\n"
         "from torchvision.transforms.functional import pad as img_pad\n"
         "from torchvision.transforms.functional import resize as img_resize\n")
if block in text:
    optional = "try:\n" + "".join("    " + line + "\n" for line in block.splitlines())
    optional += "except ImportError:  # raw-image helpers only: training reads precomputed features\n    pass\n"
    open(path, "w").write(text.replace(block, optional))
PY
sed -e 's/^import common.trainer as trainer_mod$/import common.trainer as trainer_mod/' \
    -e 's/^from utils.quick_start import quick_start$/from utils_package.quick_start import quick_start/' \
    "$here/../shared/peers/mmrec/run_peer.py" > run_peer.py
[ -e "$dest/venv" ] || ln -s "$here/.peers/mmrec/venv" "$dest/venv"  # the benchmarks look for PEER/../../venv
echo "MENTOR peer ready in $dest/src/src (python: $here/.peers/mmrec/venv/bin/python)"

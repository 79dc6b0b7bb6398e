#!/usr/bin/env bash
# One command for a lent GPU machine (the device tool): train the larger RefNet configuration for
# a fixed time and bring the run back under $OUT. It needs only torch, numpy and OpenCV there
# (python -m refrestore.training.train imports nothing else) and the data packs carried with the tree:
#   python -c "from refrestore.training.pack import pack_faces; ..."   (see README, "Training on a GPU")
# Resumes from runs/refnet-gpu/last.pth when the tree has it (commit it after each lent session).
# Environment: GPU_TRAIN_SECONDS (default 480, leaving a 9-minute command time to start and copy),
# DEVICE (cuda), BATCH (16), WORKERS (12), CONFIG (small), PACK_DIR (gpu_pack), OUT (required),
# REAL_PROB (0.7: share of samples with real photos' damage, refrestore/training/damage.py),
# MOBILEFACENET (mobilefacenet.pt for the identity and feature losses; used when the file is there,
# e.g. carried as shared/weights/mobilefacenet/mobilefacenet.pt).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that comes back}"
SECS=${GPU_TRAIN_SECONDS:-480}
DEVICE=${DEVICE:-cuda}
RUN="$OUT/refnet-gpu"
PACK=${PACK_DIR:-gpu_pack}
mkdir -p "$RUN"
args=()
MFN=${MOBILEFACENET:-shared/weights/mobilefacenet/mobilefacenet.pt}
[ -f "$MFN" ] && args+=(--mobilefacenet "$MFN")
if [ -f runs/refnet-gpu/last.pth ]; then
  cp runs/refnet-gpu/last.pth "$RUN/last.pth"
  args+=(--resume)
fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python -m refrestore.training.train \
  --data "$PACK/refbench512.npz" --extra-data "$PACK/faces256.npz:256:3" \
  --config "${CONFIG:-small}" --set aligned=true --set lq_detail=true --set fidelity=true --set hr_head=true \
  --set hr_dim=32 --device "$DEVICE" --batch "${BATCH:-16}" --workers "${WORKERS:-12}" --lr 3e-4 \
  --real-prob "${REAL_PROB:-0.7}" --loss texture=0 --max-seconds "$SECS" --ckpt-every 60 --out "$RUN" --export "$RUN/export.pth" \
  ${IDENTITY_EMBEDDER:+--identity-embedder "$IDENTITY_EMBEDDER"} "${args[@]}" 2>&1 | tee "$RUN/train.log"
ls -la "$RUN"

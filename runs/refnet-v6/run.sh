#!/usr/bin/env bash
# refnet-v6: refnet-v2 (the shipped weights) trained on the damage of real photos
# (refrestore/training/damage.py, 70% of samples) with the pretrained MobileFaceNet identity and
# feature losses. First start: --init-from runs/refnet-v2/last.pth; later starts: --resume.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
start=(--init-from runs/refnet-v2/last.pth)
[ -f runs/refnet-v6/last.pth ] && start=(--resume)
exec python -m refrestore.training.train --data ../shared/data/refbench --extra-data ../shared/data/faces:256:3 \
  --config tiny --set aligned=true --set lq_detail=true "${start[@]}" --out runs/refnet-v6 \
  --steps 200000 --batch 4 --lr 3e-4 --threads 1 --mild-prob 0.35 --extreme-prob 0.15 --no-ref-prob 0.5 \
  --real-prob 0.7 --self-ref-prob 0.3 --ema-decay 0.995 --loss texture=0 --loss adv=0 --loss identity=0.1 \
  --loss feature=0.2 --mobilefacenet ../shared/weights/mobilefacenet/mobilefacenet.pt --ckpt-every 300 \
  --export runs/refnet-v6/export.pth

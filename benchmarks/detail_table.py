"""The markdown table of benchmarks/eval_detail.sh's JSON reports (README and models/detail-stage.md).

    python benchmarks/detail_table.py /tmp/detail_eval
"""
import json, sys
from pathlib import Path
d = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/detail_eval")
print("| set | preset, fidelity | row | PSNR | SSIM | id dist | hf_ratio | hf_corr |")
print("|---|---|---|---|---|---|---|---|")
for name in ["refbench512_severe", "refbench512_severe_f1", "refbench512_severe_f0", "refbench512_moderate",
             "faces256_severe", "faces256_severe_f1", "faces256_severe_f0", "faces256_moderate"]:
    f = d / f"{name}.json"
    if not f.exists():
        continue
    j = json.loads(f.read_text())
    s = f"refbench held-out ({j['n']}, 512)" if name.startswith("ref") else f"faces held-out ({j['n']} people, 256)"
    fid = j["fidelity"] if j["fidelity"] is not None else "0.5 (default)"
    for row in ["model", "no_detail", "no_ref", "bicubic"]:
        r = j[row]
        label = {"model": "restorer + stage", "no_detail": "restorer alone (refs)", "no_ref": "restorer, no refs", "bicubic": "bicubic"}[row]
        print(f"| {s} | {j['preset']}, {fid} | {label} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['id_dist']:.4f} | {r['hf_ratio']:.3f} | {r['hf_corr']:.3f} |")

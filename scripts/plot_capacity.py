#!/usr/bin/env python3
"""Plots the capacity curve (sessions vs p50/p99 turn latency and server CPU) from the JSON
reports of scripts/capacity.sh as a dependency-free SVG.

    python3 scripts/plot_capacity.py bench-out/capacity docs/capacity.svg
"""
import glob
import json
import os
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "bench-out/capacity"
dst = sys.argv[2] if len(sys.argv) > 2 else "docs/capacity.svg"
series = {}
for path in glob.glob(os.path.join(src, "*.json")):
    r = json.load(open(path))
    transport = os.path.basename(path).split("-")[0]
    series.setdefault(transport, []).append((r["sessions_requested"], r["turn_latency_ms"]["p50"],
                                             r["turn_latency_ms"]["p99"], r.get("server_cpu_pct") or 0.0))
for s in series.values():
    s.sort()
if not series:
    sys.exit(f"no reports in {src}")

W, H, L, R, T, B = 760, 420, 70, 70, 40, 60
max_n = max(p[0] for s in series.values() for p in s)
max_ms = max(max(p[2] for s in series.values() for p in s), 1) * 1.1
x = lambda n: L + (W - L - R) * n / max_n
y_ms = lambda v: H - B - (H - T - B) * v / max_ms
y_cpu = lambda v: H - B - (H - T - B) * min(v, 100) / 100
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">voxrelay capacity: sessions vs turn latency (above silence_duration_ms) and server CPU</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{W-R}" y1="{T}" x2="{W-R}" y2="{H-B}" stroke="gray"/>',
       f'<text x="{W/2}" y="{H-20}" text-anchor="middle">concurrent sessions</text>',
       f'<text x="20" y="{H/2}" transform="rotate(-90 20 {H/2})" text-anchor="middle">turn latency (ms)</text>',
       f'<text x="{W-20}" y="{H/2}" transform="rotate(90 {W-20} {H/2})" text-anchor="middle">server CPU (% of one core)</text>']
for i in range(6):
    v = max_ms * i / 5
    out.append(f'<text x="{L-6}" y="{y_ms(v)+4}" text-anchor="end">{v:.0f}</text>')
    out.append(f'<text x="{W-R+6}" y="{y_cpu(20*i)+4}">{20*i}</text>')
    n = max_n * i / 5
    out.append(f'<text x="{x(n)}" y="{H-B+16}" text-anchor="middle">{n:.0f}</text>')
colors = {"webrtc": ("#1f77b4", "#aec7e8"), "rtp": ("#d62728", "#ff9896")}
legend_y = T + 10
for transport, pts in sorted(series.items()):
    dark, light = colors.get(transport, ("black", "gray"))
    for idx, (label, col, dash, fy) in enumerate([("p50", dark, "", y_ms), ("p99", dark, "6,3", y_ms), ("CPU", light, "2,3", y_cpu)]):
        coords = " ".join(f"{x(p[0]):.1f},{fy(p[1 + idx] if idx < 2 else p[3]):.1f}" for p in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{col}" stroke-width="2" stroke-dasharray="{dash}"/>')
        out.append(f'<line x1="{L+10}" y1="{legend_y}" x2="{L+40}" y2="{legend_y}" stroke="{col}" stroke-width="2" stroke-dasharray="{dash}"/>')
        out.append(f'<text x="{L+46}" y="{legend_y+4}">{transport} {label}</text>')
        legend_y += 16
out.append("</svg>")
os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
open(dst, "w").write("\n".join(out))
print(f"wrote {dst}")

import csv, sys
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
codecs = list(dict.fromkeys(r["codec"] for r in rows))
colors = {"ring": "tab:red", "direct": "tab:green", "tree": "tab:blue"}
fig, axes = plt.subplots(1, len(codecs), figsize=(5 * len(codecs), 5), squeeze=False)
for ax, codec in zip(axes[0], codecs):
    top = 0
    for algo, color in colors.items():
        sel = sorted((int(r["n"]), r) for r in rows if r["codec"] == codec and r["algo"] == algo)
        if not sel: continue
        n = [s[0] for s in sel]
        mean = [float(s[1]["rel_err_mean"]) for s in sel]
        sd = [float(s[1]["rel_err_sd"]) for s in sel]
        pred = [float(s[1]["predicted"]) for s in sel]
        bound = [float(s[1]["bound"]) for s in sel]
        ax.errorbar(n, mean, yerr=sd, color=color, marker="o", ms=3, capsize=2, label=f"{algo} measured")
        ax.plot(n, pred, color=color, ls="--", lw=1, label=f"{algo} model, measured ω")
        ax.plot(n, bound, color=color, ls=":", lw=1, label=f"{algo} bound, REFERENCE ω")
        top = max(top, max(pred), max(mean))
    ax.set_ylim(0, top * 1.15)
    ax.set_xlabel("ranks n")
    ax.set_ylabel("||out - exact|| / ||exact||")
    ax.set_title(codec)
    ax.grid(alpha=0.3)
handles, labels = axes[0][0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
fig.suptitle("one float32 SUM allreduce of 2^18 Gaussian values per rank (cc_algo_accuracy)")
fig.tight_layout(rect=(0, 0.14, 1, 1))
fig.savefig(sys.argv[2], dpi=110)

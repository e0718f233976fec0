"""The tables and the figure of ``benchmarks/sampler_steps.py`` (kept apart so that each file stays short): the
Markdown report with its verdicts and the whole-command timing, and the adherence / variability / time
figure against steps per sampler, DDPM 100 as a band."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REF = ("ddpm", 100)  # the reference setting every other is judged against


def finite_or_none(obj):
    """JSON without NaN or infinity: those become null."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def name(key) -> str:
    return f"{key[0]} {key[1]}" + (f" ({key[2]})" if len(key) > 2 else "")


def fmt(v: float, se: float, nd: int = 2) -> str:
    return f"{v:.{nd}f} ± {se:.{nd}f}" if np.isfinite(v) else "inf"


def markdown(summary: dict, keys: list, timing: dict, ref_time: float, cli: dict | None, meta: dict) -> str:
    lines = [f"Guides: {meta['guides']} fresh disks, {meta['per_guide']} samples each ({meta['samples']} per "
             f"setting), guidance scale {meta['scale']:g}, model {meta['model']}. Figures ± bootstrap SE over "
             f"guides; variability vs DDPM 100 with its paired 95% interval; time: median (min-max) of "
             f"{meta['time_repeats']} rounds of `generate(guide, n=16)` in-process.", "",
             "| sampler | steps | median distance (px) | mean distance (px) | within 2 px | background error | "
             "cond. variability / test set | vs DDPM 100 (95% CI) | malformed | residual RMS | s per 16 samples | "
             "speed-up vs DDPM 100 | matches DDPM 100 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in keys:
        r = summary[key]
        se = r["se"]
        tk = key[:2]
        if len(key) > 2:
            tcell, speed = "-", "-"
        else:
            t = timing[tk]
            tcell = f"{np.median(t):.2f} ({min(t):.2f}-{max(t):.2f})"
            speed = f"{ref_time / np.median(t):.1f}x"
        verdict = ("reference" if key == REF else "yes" if r["matches_ref"] else
                   "no: worse on " + ", ".join(r["worse_than_ref_on"]))
        lo, hi = r["variability_vs_ref_ci95"]
        lines.append(
            f"| {key[0]} | {key[1]}{' (' + key[2] + ')' if len(key) > 2 else ''} | {fmt(r['median_px'], se['median_px'])} | "
            f"{fmt(r['mean_px'], se['mean_px'])} | {100 * r['within_2px']:.0f}% ± {100 * se['within_2px']:.0f} | "
            f"{fmt(r['bg_error'], se['bg_error'], 3)} | {r['variability_ratio']:.3f} ± {se['variability'] / meta['test_variability']:.3f} | "
            f"{r['variability_vs_ref']:.2f} ({lo:.2f}-{hi:.2f}) | {r['malformed_count']}/{r['samples']} | "
            f"{fmt(r['residual'], se['residual'], 3)} | {tcell} | "
            f"{speed} | {verdict} |")
    why = [f"{name(k)}: " + ", ".join(f"{v} {w}" for w, v in summary[k]["malformed_why"].items() if v)
           for k in keys if summary[k]["malformed_count"]]
    lines += ["", "Malformed (a sample may have several reasons): " + ("; ".join(why) if why else "none") + ".",
              "A setting matches DDPM 100 unless the paired bootstrap 95% interval of its difference from DDPM 100 "
              "(same resampled guides) lies wholly on the worse side for a distance figure, the fraction within "
              "2 px, the background error or the variability, or it has more malformed samples (the residual "
              "RMS, the distance from a clean disk at the sample's own centre and background, is shown only)."]
    rec = meta.get("recommendation")
    lines.append("")
    if rec:
        lines.append(f"Fastest setting matching DDPM 100: **{rec['sampler']} {rec['steps']} steps**, "
                     f"{rec['speedup_in_process']:.1f}x DDPM 100's time for 16 guided samples in-process.")
    else:
        lines.append("No setting faster than DDPM 100 matches it.")
    if cli:
        lines += ["", "Whole command, `sami-rt generate --guide G -n 16 -o F [--sampler S --steps N]` (process start, "
                  "model load, grid written), median (min-max) wall seconds:", "",
                  "| setting | wall s | speed-up vs DDPM 100 |", "| --- | --- | --- |"]
        cref = float(np.median(cli[REF]))
        for k, t in cli.items():
            lines.append(f"| {name(k)}{' (the default today)' if k == REF else ''} | {np.median(t):.2f} "
                         f"({min(t):.2f}-{max(t):.2f}) | {cref / np.median(t):.1f}x |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, timing: dict, samplers, steps_list, path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from sami_rt.media.files import atomic_path

    panels = (("median_px", "median distance from the guide's disk (px)"), ("within_2px", "fraction within 2 px"),
              ("bg_error", "mean background error"),
              ("variability_vs_ref", "conditioned variability / DDPM 100's"),
              ("malformed", "fraction malformed"), ("time", "seconds per 16 guided samples"))
    fig, axs = plt.subplots(2, 3, figsize=(13, 7.6))
    ref = summary[REF]
    markers = dict(zip(samplers, "osD^v<>"))
    for ax, (k, label) in zip(axs.flat, panels):
        for s in samplers:
            keys = [(s, n) for n in steps_list]
            if k == "time":
                y = [np.median(timing[key]) for key in keys]
                e = None
            elif k == "variability_vs_ref":
                y = [summary[key][k] for key in keys]
                e = [summary[key]["se"]["variability"] / summary[REF]["variability"] for key in keys]
            else:
                y = [summary[key][k] for key in keys]
                e = [summary[key]["se"][k] for key in keys]
            y = [v if np.isfinite(v) else np.nan for v in y]
            ax.errorbar(steps_list, y, yerr=e, marker=markers[s], ms=4, capsize=2, label=s)
        if k == "time":
            t = timing[REF]
            band, mid = (min(t), max(t)), np.median(t)
        elif k == "variability_vs_ref":
            band, mid = tuple(summary[REF].get("variability_vs_ref_band", (1, 1))), 1.0
        else:
            se = ref["se"][k]
            band, mid = (ref[k] - 2 * se, ref[k] + 2 * se), ref[k]
        ax.axhspan(band[0], band[1], color="grey", alpha=0.25, lw=0, label="DDPM 100 (± 2 SE; time: min-max)")
        ax.axhline(mid, color="grey", lw=1)
        ax.set_xscale("log")
        ax.set_xticks(steps_list)
        ax.set_xticklabels([str(n) for n in steps_list])
        ax.minorticks_off()
        if k == "time":
            ax.set_yscale("log")
            ax.set_yticks([0.25, 0.5, 1, 2, 4, 8])
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(label)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    h, lab = axs.flat[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=len(samplers) + 1, frameon=False)
    fig.suptitle(f"Quality against sampling steps, {meta['guides']} fresh guides x {meta['per_guide']} samples "
                 f"(model {meta['model_name']}, guidance scale {meta['scale']:g}); error bars: bootstrap SE over guides",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=72)
    plt.close(fig)

"""Turn a run's trials into medians, ratios, target marks, a Markdown table and a chart.

``python3 benchmarks/report.py [results/latest.json]`` re-renders the table and the
chart from a saved run without measuring again.

Ratios: "x stdlib" is a *speed-up* over multiprocessing.Pool, whether the row is a
time or a rate (2.00x = twice as fast; higher is better). "x floor" is a *cost*
relative to the floor measured in the same run (1.00x = as fast as the floor; lower
is better). The tables print the multiplication sign.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from peers import PEERS
from scenarios import SCENARIOS, Scenario

STDLIB = "mp"
X = "\N{MULTIPLICATION SIGN}"


def _fmt(value: float, unit: str) -> str:
    if unit in ("tasks/s", "items/s", "MB/s"):
        return f"{value:,.0f} {unit}"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:.1f} {unit}"


def short(sc: Scenario, trial: dict[str, Any]) -> str:
    """One trial, for the progress lines."""
    if trial["status"] != "ok":
        return trial["status"]
    return _fmt(trial["value"], sc.unit)


def _speedup(sc: Scenario, value: float, base: float) -> float:
    return value / base if sc.higher_is_better else base / value


def _cost(sc: Scenario, value: float, floor: float) -> float:
    return floor / value if sc.higher_is_better else value / floor


def _peer_summary(sc: Scenario, trials: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [t for t in trials if t["status"] == "ok"]
    out: dict[str, Any] = {
        "runs": len(trials),
        "leaked": sum(t.get("leaked", 0) for t in trials),
        "shm_new": max((len(t.get("shm_new", [])) for t in trials), default=0),
        "failures": [t.get("error", "") for t in trials if t["status"] != "ok"],
    }
    if not ok:
        out["status"] = trials[0]["status"] if trials else "n/a"
        return out
    values = [t["value"] for t in ok]
    out.update(status="ok", value=statistics.median(values), values=values,
               spread=(max(values) - min(values)) / statistics.median(values))
    extra_keys = {k for t in ok for k in t} - {"value", "status", "leaked", "shm_new"}
    for key in sorted(extra_keys):
        nums = [t[key] for t in ok if isinstance(t.get(key), (int, float))]
        if nums:
            out[key] = statistics.median(nums)
    return out


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, res in data["results"].items():
        sc = SCENARIOS[name]
        rows = {peer: _peer_summary(sc, trials) for peer, trials in res["trials"].items()}
        floor = rows.pop("floor", None)
        base = rows.get(STDLIB, {}).get("value")
        for row in rows.values():
            if row.get("value") is None:
                continue
            if base:
                row["speedup"] = _speedup(sc, row["value"], base)
            if floor and floor.get("value"):
                row["floor_cost"] = _cost(sc, row["value"], floor["value"])
            if name == "cpu" and floor and floor.get("serial"):
                row["efficiency"] = floor["serial"] / 2 / row["value"]
        if name == "cpu" and floor and floor.get("serial"):
            floor["efficiency"] = floor["serial"] / 2 / floor["value"]
        summary[name] = {"floor": floor, "peers": rows}
    summary["targets"] = targets(summary)
    return summary


# -- the issues' targets


def _get(summary: dict[str, Any], scenario: str, peer: str, key: str) -> float | None:
    value = summary.get(scenario, {}).get("peers", {}).get(peer, {}).get(key)
    return value if isinstance(value, (int, float)) else None


def _check(issue: str, text: str, measured: float | None, ok: bool | None, shown: str) -> dict[str, Any]:
    return {"issue": issue, "target": text, "measured": shown if measured is not None else "not measured",
            "ok": ok if measured is not None else None}


BUSY = 0.2  # other processes' share of the CPUs above which a mark is flagged as noisy


def _busy(s: dict[str, Any], scenario: str) -> float:
    """The largest share of the CPUs other processes took during the rows a target uses."""
    rows = [s.get(scenario, {}).get("peers", {}).get(p) or {} for p in ("procpool", STDLIB)]
    rows.append(s.get(scenario, {}).get("floor") or {})
    return max((r.get("foreign_load", 0.0) for r in rows), default=0.0)


def _at_least(summary: dict[str, Any], issue: str, text: str, scenario: str, key: str,
              limit: float, peer: str = "procpool") -> dict[str, Any]:
    v = _get(summary, scenario, peer, key)
    return _check(issue, text, v, v is not None and v >= limit, f"{v:.2f}{X}" if v is not None else "")


def _at_most(summary: dict[str, Any], issue: str, text: str, scenario: str, key: str,
             limit: float) -> dict[str, Any]:
    v = _get(summary, scenario, "procpool", key)
    return _check(issue, text, v, v is not None and v <= limit, f"{v:.2f}{X}" if v is not None else "")


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    out = [
        _at_least(s, "#2", f"apply latency ≤ 1/4 of stdlib's (≥ 4.00{X} stdlib)", "apply", "speedup", 4.0),
        _at_most(s, "#2", f"apply latency ≤ 3{X} pipe floor", "apply", "floor_cost", 3.0),
        _at_least(s, "#2", f"apply_async throughput ≥ 2{X} stdlib", "throughput", "speedup", 2.0),
        _at_least(s, "#2", f"map no slower than stdlib (≥ 1.00{X})", "map", "speedup", 1.0),
    ]
    cpu = _get(s, "cpu", "procpool", "efficiency")
    ceiling = (s.get("cpu", {}).get("floor") or {}).get("efficiency")
    rel = cpu / ceiling if cpu is not None and ceiling else None
    out.append(_check("#2", "CPU-bound efficiency ≥ 95% of the two-bare-process ceiling", rel,
                      rel is not None and rel >= 0.95,
                      f"{rel:.1%} ({cpu:.1%} vs ceiling {ceiling:.1%})" if rel is not None else ""))
    out.append(_at_most(s, "#4", f"apply latency ≤ 2{X} pipe floor", "apply", "floor_cost", 2.0))
    out.append(_at_least(s, "#4", f"apply_async throughput ≥ 5{X} stdlib", "throughput", "speedup", 5.0))
    rows = s.get("throughput", {}).get("peers", {})
    mine = _get(s, "throughput", "procpool", "value")
    others = {p: r["value"] for p, r in rows.items() if not p.startswith("procpool") and r.get("value")}
    best = max(others, key=lambda p: others[p]) if others else None
    out.append(_check("#4", "apply_async throughput ahead of every other library", mine,
                      mine is not None and best is not None and mine > others[best],
                      f"procpool {mine:,.0f}/s vs best other {best} {others[best]:,.0f}/s"
                      if mine is not None and best else ""))
    out.append(_at_least(s, "#4", f"imap_unordered chunksize 1 ≥ 3{X} stdlib", "imap_unordered", "speedup", 3.0))
    out.append(_at_least(s, "#4", f"map ≥ 1.2{X} stdlib", "map", "speedup", 1.2))
    bw = _get(s, "numpy", "procpool", "speedup")
    shm = _get(s, "numpy", "procpool", "shm_new")
    out.append(_check("#4", f"100 MB numpy round trip ≥ 5{X} stdlib bandwidth, 0 shm segments left", bw,
                      bw is not None and bw >= 5.0 and shm == 0,
                      f"{bw:.2f}{X}, {shm:.0f} /dev/shm segments left" if bw is not None else ""))
    growth = _get(s, "memory", "procpool", "growth_pct")
    out.append(_check("#4", "parent RSS flat within 10% from 100k to 1M tasks", growth,
                      growth is not None and abs(growth) <= 10.0,
                      f"{growth:+.1f}%" if growth is not None else ""))
    scenarios = ["apply", "apply", "throughput", "map", "cpu", "apply", "throughput", "throughput",
                 "imap_unordered", "map", "numpy", "memory", "throughput"]
    for check, scenario in zip(out, scenarios, strict=False):
        check["busy"] = _busy(s, scenario)
    if "procpool-ex" in PEERS:
        ex = _get(s, "throughput", "procpool-ex", "value")
        cf = _get(s, "throughput", "cf", "value")
        ratio = ex / cf if ex and cf else None
        out.append(_check("#5", f"Executor submit throughput ≥ 5{X} ProcessPoolExecutor", ratio,
                          ratio is not None and ratio >= 5.0, f"{ratio:.2f}{X}" if ratio else ""))
        out[-1]["busy"] = _busy(s, "throughput")
    return out


# -- rendering


def _label(peer: str) -> str:
    return PEERS[peer].label if peer in PEERS else peer


def _notes_for(sc: Scenario, peer: str, row: dict[str, Any]) -> str:
    bits = []
    if "efficiency" in row:
        bits.append(f"efficiency {row['efficiency']:.1%}")
    if sc.name == "memory" and "rss_first" in row:
        bits.append(f"{row['rss_first']:.1f} MB after {row['first_tasks']:,.0f} tasks → "
                    f"{row['value']:.1f} MB after {row['total_tasks']:,.0f} ({row['growth_pct']:+.1f}%)")
    if sc.name == "numpy" and row.get("status") == "ok":
        bits.append(f"{row['shm_new']} /dev/shm segments left")
    if row.get("foreign_load", 0) > 0.15:
        bits.append(f"other processes used {row['foreign_load']:.0%} of the CPUs")
    if row.get("spread", 0) > 0.25:
        bits.append(f"noisy: repeats spread {row['spread']:.0%}")
    if row.get("leaked"):
        bits.append(f"**{row['leaked']} stray processes killed**")
    if row.get("failures") and row.get("status") == "ok":
        bits.append(f"{len(row['failures'])} failed repeats")
    if row.get("status") == "error":
        bits.append(row["failures"][0][:120])
    return "; ".join(bits)


def _cell(row: dict[str, Any], key: str, suffix: str) -> str:
    v = row.get(key)
    return f"{v:.2f}{X} {suffix}" if isinstance(v, (int, float)) else ""


def _n(row: dict[str, Any]) -> str:
    ok = len(row.get("values", []))
    return f"{ok}" if ok == row["runs"] else f"{ok}/{row['runs']}"


def table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | peer | median | n | vs stdlib (speed-up) | vs floor (cost) | notes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name in data["results"]:
        sc = SCENARIOS[name]
        s = data["summary"][name]
        size = ", ".join(f"{k}={v:,}" for k, v in data["results"][name]["params"].items() if k != "loops")
        head = f"**{sc.title}** ({sc.unit}{'; ' + size if size else ''})"
        floor = s["floor"]
        if floor:
            note = f"efficiency {floor['efficiency']:.1%}" if "efficiency" in floor else ""
            if "polling" in floor:
                note = f"both sides polling before sleeping: {floor['polling']:.1f} µs"
            value = _fmt(floor["value"], sc.unit) if floor.get("value") else floor.get("status", "")
            lines.append(f"| {head} | *floor: {sc.floor_label}* | {value} | {_n(floor)} |  | 1.00{X} floor | {note} |")
            head = ""
        for peer, row in s["peers"].items():
            value = _fmt(row["value"], sc.unit) if row.get("value") is not None else row["status"]
            lines.append(f"| {head} | {_label(peer)} | {value} | {_n(row)} | {_cell(row, 'speedup', 'stdlib')} "
                         f"| {_cell(row, 'floor_cost', 'floor')} | {_notes_for(sc, peer, row)} |")
            head = ""
    return lines


def footnotes(data: dict[str, Any]) -> list[str]:
    lines = []
    for name in data["results"]:
        for peer in data["results"][name]["trials"]:
            note = getattr(PEERS.get(peer), "notes", {}).get(name)
            if note:
                lines.append(f"- {_label(peer)}, {name}: {note}")
    return lines


def render(data: dict[str, Any]) -> str:
    env = data["env"]
    head = (f"Run of {env['date']} on commit {env['commit']}{' (src dirty)' if env.get('dirty') else ''}, "
            f"Python {env['python']}, {env['machine']}, {data['repeat']} repeats"
            f"{' (quick)' if data.get('quick') else ''}, load {env['load_before']:.2f} → "
            f"{env.get('load_after', 0):.2f}, wall {env.get('wall_s', 0):.0f} s.")
    marks = {True: "PASS", False: "FAIL", None: "n/a"}
    lines = [head, "", *table(data), "", "Targets (procpool):", "",
             "| issue | target | measured | |", "|---|---|---|---|"]
    noisy = False
    for t in data["summary"]["targets"]:
        flag = "*" if t.get("busy", 0) > BUSY and t["ok"] is not None else ""
        noisy = noisy or bool(flag)
        lines.append(f"| {t['issue']} | {t['target']} | {t['measured']} | {marks[t['ok']]}{flag} |")
    if noisy:
        lines += ["", f"\\* measured while other processes used more than {BUSY:.0%} of the CPUs "
                  "(see the notes column): take the mark with salt."]
    notes = footnotes(data)
    if notes:
        lines += ["", "Where a peer lacks the operation:", "", *notes]
    return "\n".join(lines)


def chart(data: dict[str, Any], path: Path) -> None:
    """Bars: each peer's speed-up over multiprocessing.Pool per scenario, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in data["results"] if n != "memory"]
    peers = [p for p in PEERS if any(p in data["summary"][n]["peers"] for n in names)]
    width = 0.8 / max(1, len(peers) + 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(names)), 5))
    for i, peer in enumerate([*peers, "floor"]):
        xs, ys = [], []
        for j, n in enumerate(names):
            s = data["summary"][n]
            if peer == "floor":
                base = s["peers"].get(STDLIB, {}).get("value")
                if s["floor"] and s["floor"].get("value") and base:
                    ys.append(_speedup(SCENARIOS[n], s["floor"]["value"], base))
                    xs.append(j)
            elif s["peers"].get(peer, {}).get("speedup"):
                ys.append(s["peers"][peer]["speedup"])
                xs.append(j)
        kw = {"color": "0.8", "hatch": "//", "edgecolor": "0.5"} if peer == "floor" else {}
        ax.bar([x + (i - len(peers) / 2) * width for x in xs], ys, width,
               label=_label(peer) if peer != "floor" else "floor (same run)", **kw)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), [SCENARIOS[n].name for n in names])
    ax.set_ylabel("speed-up over multiprocessing.Pool (log; higher is better)")
    env = data["env"]
    ax.set_title(f"procpool and peers, 2 workers — {env['date']}, commit {env['commit']}")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results" / "latest.json"
    data = json.loads(path.read_text())
    data["summary"] = summarize(data)
    print(render(data))
    chart(data, Path(__file__).resolve().parent / "results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

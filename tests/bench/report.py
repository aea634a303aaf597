"""Results out: ``results.json`` (everything), ``results.md`` (the tables) and one PNG per
swept profile and mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.bench.plot import latency_chart

NA = "n/a"
MODE_TITLES = {"json": "Non-streaming /v1/responses", "stream": "Streaming /v1/responses (SSE)",
               "stream_long": "Streaming /v1/responses (SSE), long replies"}
PROFILE_TITLES = {"none": "no upstream latency", "60ms": "60 ms upstream latency"}


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return NA
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the JSON, the markdown and the plots into ``out``; the files written."""
    written = [out / "results.json"]
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    written += _plots(results, out)
    (out / "results.md").write_text(markdown(results, out) + "\n")
    written.append(out / "results.md")
    return written


def _plots(results: dict[str, Any], out: Path) -> list[Path]:
    written = []
    for profile, data in results.get("profiles", {}).items():
        for mode, cell in data.get("modes", {}).items():
            fixed = cell.get("fixed") or {}
            if max((len(runs) for runs in fixed.values()), default=0) < 2:
                continue
            series = {}
            for key, runs in fixed.items():
                series[data.get("targets", {}).get(key, key)] = [
                    (r["offered_rate"], r["service_ms"].get("p50", 0), r["service_ms"].get("p99", 0))
                    for r in runs if r.get("service_ms")]
            path = out / f"latency-{profile}-{mode}.png"
            latency_chart(path, f"{MODE_TITLES[mode]}, {PROFILE_TITLES[profile]}", series)
            written.append(path)
    return written


def _cell(results: dict[str, Any], profile: str, mode: str) -> dict[str, Any]:
    return results.get("profiles", {}).get(profile, {}).get("modes", {}).get(mode, {})


def _rate(cell: dict[str, Any], key: str) -> float | None:
    sat = cell.get("saturation", {}).get(key)
    return sat["rate"] if sat else None


def targets_table(results: dict[str, Any]) -> list[str]:
    """The issue's targets against this run's figures."""
    rows = []
    json_cell = _cell(results, "none", "json")
    stream_cell = _cell(results, "none", "stream")
    gw, pt = _rate(json_cell, "gateway"), _rate(json_cell, "passthrough")
    if gw and pt:
        share = gw / pt
        rows.append(["1 worker vs minimal pass-through (JSON)", ">= 60% (stretch 80%)",
                     f"{share:.0%} ({gw:,.0f} vs {pt:,.0f} req/s)", _yes(share >= 0.6)])
        gw_cpu, pt_cpu = _own_cpu(json_cell, "gateway"), _own_cpu(json_cell, "passthrough")
        if gw_cpu and pt_cpu:
            rows.append(["the same by CPU per request (insensitive to other load)", ">= 60% (stretch 80%)",
                         f"{pt_cpu / gw_cpu:.0%} ({gw_cpu:.3f} vs {pt_cpu:.3f} ms)", _yes(pt_cpu / gw_cpu >= 0.6)])
    paired = json_cell.get("paired") or {}
    if paired.get("cpu_ratio"):
        share = 1 / paired["cpu_ratio"]
        rows.append(["the same by CPU per request, both loaded at once (steady on a shared host)",
                     ">= 60% (stretch 80%)", _paired_text(paired), _yes(share >= 0.6)])
    lite = json_cell.get("litellm", {}).get("saturation", {})
    if gw and lite.get("litellm"):
        ratio = gw / lite["litellm"]["rate"]
        rows.append(["vs LiteLLM proxy (JSON)", ">= 30x",
                     f"{ratio:.1f}x ({gw:,.0f} vs {lite['litellm']['rate']:,.0f} req/s)", _yes(ratio >= 30)])
    else:
        rows.append(["vs LiteLLM proxy (JSON)", ">= 30x", "not measured (run with --with-litellm)", NA])
    added = json_cell.get("added_at_half", {}).get("gateway")
    if added:
        rows.append(["added latency p50 at half saturation", "<= 0.5 ms", f"{added['p50_ms']:.2f} ms "
                     f"at {added['rate']:,.0f} req/s", _yes(added["p50_ms"] <= 0.5)])
        rows.append(["added latency p99 at half saturation", "<= 3 ms", f"{added['p99_ms']:.2f} ms",
                     _yes(added["p99_ms"] <= 3)])
    stream_added = stream_cell.get("added_at_half", {}).get("gateway")
    if stream_added and "ttfb_p50_ms" in stream_added:
        rows.append(["streaming added time to first byte p50", "<= 1 ms", f"{stream_added['ttfb_p50_ms']:.2f} ms",
                     _yes(stream_added["ttfb_p50_ms"] <= 1)])
    held = results.get("streams")
    if held:
        count = held.get("held_within_limit", 0)
        tried = max((row["target"] for row in held.get("steps", [])), default=0)
        rows.append([f"open streams in one worker within {held['rss_limit_mb']:g} MB RSS", ">= 2,000",
                     f"{count:,} held (of {tried:,} tried), {held.get('kb_per_stream', 0):.0f} KB each",
                     _yes(count >= 2000)])
    scaling = results.get("scaling", {})
    if "1" in scaling and "2" in scaling:
        speedup = scaling["2"]["speedup"]
        rows.append(["2 workers vs 1", ">= 1.8x", f"{speedup:.2f}x", _yes(speedup >= 1.8)])
    return _table(["target (issue 6)", "goal", "this run", "met"], rows)


def _paired_text(paired: dict[str, Any]) -> str:
    """``Meter.paired``'s result as the pass-through's share of the gateway's CPU per request."""
    shares = sorted(1 / ratio for ratio in paired["cpu_ratios"])
    spread = f"; {shares[0]:.0%}-{shares[-1]:.0%}" if len(shares) > 1 else ""
    rounds = f"median of {len(shares)} rounds" if len(shares) > 1 else "1 round"
    return (f"{1 / paired['cpu_ratio']:.0%} ({rounds} of {paired['seconds']:g} s{spread}; "
            f"the gateway uses {paired['cpu_ratio']:.2f}x the pass-through's CPU per request)")


def _own_cpu(cell: dict[str, Any], key: str) -> float | None:
    """CPU ms per request of the target's own process at saturation."""
    cpu = cell.get("saturation", {}).get(key, {}).get("cpu_ms_per_request") or {}
    return next(iter(cpu.values()), None)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _peak(data: dict[str, Any], key: str) -> str:
    peak = data.get("peak_rss_mb", {}).get(key)
    return _num(peak["max_process"], 0) if peak else NA


def mode_table(data: dict[str, Any], mode: str, cell: dict[str, Any]) -> list[str]:
    sat = cell.get("saturation", {})
    added = cell.get("added_at_half", {})
    per_event = cell.get("per_event", {})
    pt = sat.get("passthrough", {}).get("rate")
    header = ["configuration", "saturation req/s", "vs pass-through", "CPU ms/req", "req/s per core",
              "peak RSS MB", "added p50 ms", "added p99 ms"]
    if mode == "stream":
        header += ["added TTFB p50 ms", "CPU µs/event"]
    header += ["errors", "other load"]
    rows = []
    for key, result in sat.items():
        server = data.get("targets", {}).get(key, key)
        cpu = result.get("cpu_ms_per_request", {})
        # the first entry is the target's own process
        own = next(iter(cpu.values()), None) if cpu else None
        row = [server, _num(result["rate"], 0), f"{result['rate'] / pt:.0%}" if pt else NA, _num(own, 3),
               _num(1000 / own, 0) if own else NA, _peak(data, key)]
        extra = added.get(key)
        row += ["(baseline)", "(baseline)"] if key == "direct" else (
            [_num(extra["p50_ms"], 3), _num(extra["p99_ms"], 3)] if extra else [NA, NA])
        if mode == "stream":
            row.append("(baseline)" if key == "direct" else _num(extra.get("ttfb_p50_ms") if extra else None, 3))
            row.append(_num(per_event.get(key, {}).get("cpu_us_per_event"), 1))
        row.append(_num(result.get("error_count", 0)))
        foreign = result.get("foreign_load")
        row.append(f"{foreign:.0%}" if foreign is not None else NA)
        rows.append(row)
    return [*_table(header, rows),
            "CPU ms/req: the configuration's own processes (the simulator's for the direct row); req/s per core: "
            "1000 / CPU ms, what one uncontended core would serve; other load: share "
            "of the system-under-test core used by anything else during the saturation run (other jobs on the "
            "machine); added: minus the direct row at the same offered rate (half of the gateway's saturation).",
            ""]


def sweep_table(data: dict[str, Any], cell: dict[str, Any]) -> list[str]:
    fixed = cell.get("fixed", {})
    if not fixed:
        return []
    fractions = sorted({r["fraction"] for runs in fixed.values() for r in runs})
    first = next(iter(fixed.values()))
    rates = {r["fraction"]: r["offered_rate"] for r in first}
    header = ["configuration"] + [f"{rates.get(f, 0):,.0f}/s ({f:g}x)" for f in fractions]
    rows = []
    for key, runs in fixed.items():
        by = {r["fraction"]: r for r in runs}
        row = [data.get("targets", {}).get(key, key)]
        for fraction in fractions:
            run = by.get(fraction)
            if not run or not run.get("service_ms"):
                row.append(NA)
                continue
            note = ""
            if run.get("dropped") or run.get("error_count"):
                note = f" ({run.get('dropped', 0) + run.get('error_count', 0):,} lost)"
            elif run["generator"]["lag_ms"].get("p99", 0) > 10:
                note = " (generator late)"
            if (run.get("foreign_load") or 0) > 0.1:
                note += f" (other load {run['foreign_load']:.0%})"
            if run.get("tcp", {}).get("TCPSynRetrans"):
                note += f" ({run['tcp']['TCPSynRetrans']} SYN retries)"
            if len(run.get("repeats", [])) > 1:
                p50s = [r["p50"] for r in run["repeats"]]
                note += f" (p50 {min(p50s):.2f}-{max(p50s):.2f} over {len(p50s)} runs)"
            row.append(f"{run['service_ms']['p50']:.2f} / {run['service_ms']['p99']:.2f}{note}")
        rows.append(row)
    return ["Latency p50 / p99 (ms, send to last byte) at each offered rate:", "", *_table(header, rows)]


def generator_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for profile, data in results.get("profiles", {}).items():
        for mode, cell in data.get("modes", {}).items():
            runs = [r for rs in cell.get("fixed", {}).values() for r in rs if r.get("fraction") == 0.5]
            if not runs:
                continue
            lag50 = max(r["generator"]["lag_ms"].get("p50", 0) for r in runs)
            lag99 = max(r["generator"]["lag_ms"].get("p99", 0) for r in runs)
            cpu = [r["generator"]["cpu_ms_per_request"] for r in runs if r["generator"]["cpu_ms_per_request"]]
            rows.append([f"{profile} / {mode}", f"{runs[0]['offered_rate']:,.0f}", _num(lag50, 3), _num(lag99, 3),
                         _num(max(cpu, default=None), 3), _num(sum(r.get("dropped", 0) for r in runs))])
    if not rows:
        return []
    return ["The open-loop generator's own overhead at the half-saturation rate (worst over the configurations):",
            "", *_table(["profile / mode", "rate req/s", "send lag p50 ms", "send lag p99 ms", "CPU ms/req",
                         "dropped"], rows)]


def profile_section(results: dict[str, Any]) -> list[str]:
    """Per sampled mode, the tables of both py-spy recordings (``tests.bench.profiling``), after
    the check of where each way of sampling puts its samples."""
    lines = _sampler_check(results.get("sampler_check") or {})
    for mode, recorded in results.get("profile", {}).items():
        python, native = recorded.get("python"), recorded.get("native")
        if not python:
            continue
        lines += [f"### Gateway at saturation, {MODE_TITLES[mode].lower()}", "",
                  f"{python['samples']:,} samples (py-spy --nonblocking, 250 Hz, the process never stopped); the "
                  f"gateway served {python['rate_while_profiled']:,.0f} req/s while sampled.", ""]
        lines += ["Self time by Python package (each sample charged to its innermost Python frame):", "", *_table(
            ["package", "self %"], [[r["frame"], f"{r['percent']:.1f}"] for r in python["packages"]])]
        lines += ["Top Python functions (the C they called included, e.g. a garbage collection their allocation "
                  "triggered): the table to pick an optimisation from.", "", *_table(
                      ["function", "%"], [[f"`{r['frame']}`", f"{r['percent']:.1f}"]
                                          for r in python["python_self"][:20]])]
        if not native:
            lines += ["No native recording: py-spy could not unwind C frames here.", ""]
            continue
        lines += [f"With C frames: {native['samples']:,} samples (py-spy --native, 50 Hz, the process stopped for "
                  f"each; system calls overweighted, see the sampler check); the gateway served "
                  f"{native['rate_while_profiled']:,.0f} req/s while sampled.", ""]
        lines += ["Self time by component (where the sampled code lives):", "", *_table(
            ["component", "self %"], [[r["frame"], f"{r['percent']:.1f}"] for r in native["packages"]])]
        lines += ["Top frames by self time (C frames included):", "", *_table(
            ["frame", "self %"], [[f"`{r['frame']}`", f"{r['percent']:.1f}"] for r in native["self"][:15]])]
        lines += ["Top Python frames by inclusive time (the server's root chain left out):", "", *_table(
            ["frame", "inclusive %"], [[f"`{r['frame']}`", f"{r['percent']:.1f}"]
                                       for r in native["inclusive"][:20]])]
    return lines


def _sampler_check(check: dict[str, Any]) -> list[str]:
    """``profiling.check_sampler``'s figures as a sentence, or nothing without them."""
    nonblocking, native = check.get("nonblocking") or {}, check.get("native") or {}
    if nonblocking.get("percent") is None or native.get("percent") is None:
        return []
    return [f"Sampler check (`tests/bench/sampler_probe.py` on the gateway's core): a system call taking "
            f"{check['system_call_percent']:.1f}% of a loop's time drew {nonblocking['percent']:.1f}% of the "
            f"--nonblocking samples ({nonblocking['samples']:,}) and {native['percent']:.1f}% of the --native ones "
            f"({native['samples']:,}). Stopping the process for a sample puts it on a system call's return, so the "
            "Python tables come from the recording that never stops it.", ""]


def instructions_section(results: dict[str, Any]) -> list[str]:
    """``--instructions``: per mode, each configuration's instructions per request, the
    pass-through's share of them, and what the part a configuration leaves out costs."""
    configurations: dict[str, Any] = results.get("instructions", {}).get("configurations", {})
    first: dict[str, Any] = next(iter(configurations.values()), {})
    lines: list[str] = []

    def per_request(name: str, mode: str) -> float | None:
        return configurations.get(name, {}).get("modes", {}).get(mode, {}).get("instructions_per_request")

    for mode in first.get("modes", {}):
        base, full = per_request("passthrough", mode), per_request("full", mode)
        rows = []
        for name, data in configurations.items():
            count = per_request(name, mode)
            if count is None:
                continue
            batches = data["modes"][mode]["batches"]
            share = f"{base / count:.0%}" if base else "-"
            cost = f"{(full - count) / full:.1%} ({(full - count) / 1e3:,.0f} k)" if full and data["left_out"] else ""
            rows.append([data["label"], f"{count / 1e6:.3f}", f"{min(batches) / 1e6:.3f}-{max(batches) / 1e6:.3f}",
                         share, data["left_out"], cost])
        sample = first["modes"][mode]
        lines += [f"### {MODE_TITLES[mode]}", "",
                  f"Batches of {sample['requests']} requests, {sample['concurrency']} at a time, after a warm-up; "
                  "the median batch.", "", *_table(
                      ["configuration", "M instructions / request", "batches", "pass-through / this",
                       "left out", "what that part costs (of the full pipeline)"], rows)]
    return lines


def parts_section(results: dict[str, Any]) -> list[str]:
    """``--parts``: per mode, each configuration's CPU per request against the pass-through's
    (both loaded at once), and what the part it leaves out costs of the full pipeline's CPU."""
    parts = results.get("parts", {})
    configurations: dict[str, Any] = parts.get("configurations", {})
    lines: list[str] = []
    for mode, measured in _paired_by_mode(configurations):
        full = configurations.get("full", {}).get("modes", {}).get(mode, {}).get("cpu_ratio")
        rows = [[data["label"], *_ratio_cells(paired), data["left_out"],
                 f"{1 - paired['cpu_ratio'] / full:.1%}" if full and data["left_out"] else ""]
                for data, paired in measured]
        lines += [*_paired_heading(parts, mode, "Each configuration loaded at once with the pass-through on the same "
                                                "core"), *_table(
                      ["configuration", "CPU per request, x the pass-through's", "pass-through / this", "rounds",
                       "left out", "what that part costs (of the full pipeline's CPU)"], rows)]
    return lines


def shapes_section(results: dict[str, Any]) -> list[str]:
    """``--shapes``: per mode, the gateway's CPU per request beside the pass-through's for each
    request shape (both loaded at once with the same body)."""
    measured_shapes = results.get("shapes", {})
    lines: list[str] = []
    for mode, measured in _paired_by_mode(measured_shapes.get("shapes", {})):
        rows = [[data["label"], _num(data["bytes"]), _median_cpu(paired, paired["other"]),
                 _median_cpu(paired, paired["base"]), *_ratio_cells(paired)] for data, paired in measured]
        lines += [*_paired_heading(measured_shapes, mode, "The gateway (full pipeline) and the pass-through loaded "
                                                          "at once on the same core with the same request"), *_table(
                      ["request", "bytes (JSON)", "gateway CPU ms/req", "pass-through CPU ms/req",
                       "gateway, x the pass-through's", "pass-through / gateway", "rounds"], rows)]
    return lines


def _paired_by_mode(entries: dict[str, Any]) -> list[tuple[str, list[tuple[dict[str, Any], dict[str, Any]]]]]:
    """Per mode, each entry with its ``Meter.paired`` result in that mode, where it has a ratio."""
    modes = dict.fromkeys(mode for data in entries.values() for mode in data["modes"])
    return [(mode, [(data, data["modes"][mode]) for data in entries.values()
                    if data["modes"].get(mode, {}).get("cpu_ratio")]) for mode in modes]


def _ratio_cells(paired: dict[str, Any]) -> list[str]:
    """The median round's CPU ratio, the share it gives, and the rounds' range of shares."""
    ratio = paired["cpu_ratio"]
    shares = sorted(1 / r for r in paired["cpu_ratios"])
    return [f"{ratio:.2f}x", f"{1 / ratio:.0%}", f"{shares[0]:.0%}-{shares[-1]:.0%}"]


def _paired_heading(measured: dict[str, Any], mode: str, loaded: str) -> list[str]:
    rounds = f"{measured['rounds']} round{'s' if measured['rounds'] > 1 else ''}"
    return [f"### {MODE_TITLES[mode]}", "",
            f"{loaded}, {measured['connections']} connections each, {rounds} of {measured['seconds']:g} s; the "
            "median round.", ""]


def _median_cpu(paired: dict[str, Any], key: str) -> str:
    """The median over ``Meter.paired``'s rounds of one target's CPU ms per request."""
    values = sorted(run[key]["cpu_ms_per_request"] for run in paired["runs"]
                    if run[key]["cpu_ms_per_request"] is not None)
    return _num(values[len(values) // 2], 3) if values else NA


def streams_section(results: dict[str, Any]) -> list[str]:
    held = results.get("streams")
    if not held:
        return []
    rows = [[_num(r["target"]), _num(r["open"]), _num(r["failed"]), _num(r["rss_mb"], 1)] for r in held["steps"]]
    return [f"One gateway worker, simulator pausing {held['token_delay_ms']:g} ms between events; baseline RSS "
            f"{held['baseline_rss_mb']:.1f} MB, peak {held.get('peak_rss_mb', 0):.1f} MB; stopped: "
            f"{held['stop_reason']}. About {held.get('kb_per_stream', 0):.0f} KB per open stream, so "
            f"{held['rss_limit_mb']:g} MB would hold about {_num(held.get('extrapolated_within_limit'))} "
            "(extrapolated).", "",
            *_table(["streams opened", "open at reading", "failed", "worker RSS MB"], rows)]


def scaling_section(results: dict[str, Any]) -> list[str]:
    scaling = results.get("scaling")
    if not scaling:
        return []

    def own_cpu(run: dict[str, Any]) -> str:
        return _num(next(iter(run["cpu_ms_per_request"].values()), None), 3)

    def busy(run: dict[str, Any]) -> str:
        share = run.get("load_cores_busy")
        return f"{share:.0%}" if share is not None else NA

    def speed(r: dict[str, Any]) -> str:
        measured = r.get("core_speed")
        return f"{measured['mean']:.2f} (min {measured['min']:.2f})" if measured else NA

    rows = []
    for workers, r in scaling.items():
        pt = r.get("passthrough", {})
        rows.append([workers, r.get("cores") or "any", r.get("load_cores") or "any", _num(r["connections"]),
                     speed(r), _num(r["rate"], 0), _num(r.get("speedup")), own_cpu(r), busy(r),
                     _num(pt.get("rate"), 0) if pt else NA, _num(pt.get("speedup")) if pt else NA,
                     f"{r['share_of_passthrough']:.0%}" if r.get("share_of_passthrough") else NA])
    return ["Non-streaming, no upstream latency, store false, full pipeline. Pinned, the workers take the first "
            "cores and the simulator and wrk (a process and a thread per core, up to 8) the cores left; with none "
            "left (2 workers on 2 cores) they share the configured load core. Load busy: share of the load cores' "
            "time in use during the run; near 100% the load side, not the workers, set the rate. Core speed: each "
            "worker core's speed with all of them busy at once (spin loops) over one alone; n workers cannot beat n "
            "times it.", "",
            *_table(["workers", "worker cores", "load cores", "connections", "core speed", "gateway req/s", "speedup",
                     "CPU ms/req", "load busy", "pass-through req/s", "its speedup", "gateway / pass-through"],
                    rows)]


def litellm_section(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    data = results.get("profiles", {}).get("none", {})
    for mode, cell in data.get("modes", {}).items():
        lite = cell.get("litellm")
        if not lite or not lite.get("saturation"):
            continue
        rows = []
        for key, sat in lite["saturation"].items():
            added = lite.get("added_at_half", {}).get(key, {})
            own = next(iter(sat.get("cpu_ms_per_request", {}).values()), None)
            rows.append([data.get("targets", {}).get(key, key), _num(sat["rate"], 0), _num(own, 3),
                         _num(added.get("p50_ms"), 3) if key != "direct-chat" else "(baseline)",
                         _num(added.get("p99_ms"), 3) if key != "direct-chat" else "(baseline)",
                         _num(sat.get("error_count", 0))])
        rate = next(iter(lite.get("fixed", {}).values()), [{}])[0].get("offered_rate")
        kind = "Streaming" if mode == "stream" else "Non-streaming"
        lines += [f"{kind}: LiteLLM's /v1/chat/completions and the gateway's /v1/responses, both calling the "
                  f"simulator's Chat Completions path; added latency at {_num(rate, 0)} req/s (half of LiteLLM's "
                  "saturation):", "",
                  *_table(["configuration", "saturation req/s", "CPU ms/req", "added p50 ms", "added p99 ms",
                           "errors"], rows)]
    return lines


def markdown(results: dict[str, Any], out: Path | None = None) -> str:
    meta = results["meta"]
    host = meta["host"]
    layout = meta["layout"]
    def cores(text: str) -> str:
        return f"cores {text}" if "," in text or "-" in text else f"core {text}"

    layout_text = (f"system under test on {cores(layout['system_under_test'])}, simulator and load generators on "
                   f"{cores(layout['simulator_and_load'])} (taskset)" if isinstance(layout, dict) else "not pinned")
    commit = (f"Commit {meta['commit']}{' with local changes' if meta['dirty'] else ''}" if meta["commit"]
              else "Commit unknown (not run from a git checkout)")
    threads = meta["generator"].get("saturation_threads", 1)
    quick = " (--quick: short runs, noisy figures)" if meta["options"]["quick"] else ""
    whole_run = f"Whole run: {meta.get('wall_seconds', 0):g} s{quick}."
    load = (f"Saturation: {meta['generator']['saturation']}, closed loop, "
            f"{threads} thread{'s' if threads > 1 else ''}, {meta['options']['connections']} connections "
            f"({meta['options']['latency_connections']} with upstream "
            f"latency), {meta['options']['sat_seconds']:g} s after a warm-up. Fixed rates: "
            f"{meta['generator']['fixed_rate']}, {meta['options']['fixed_seconds']:g} s at half of the gateway's "
            f"saturation, {meta['options']['sweep_seconds']:g} s at the other points. {whole_run}")
    lines = [
        f"# interlock benchmark, {meta['date']}", "",
        f"Machine: {host['cpus']} CPUs ({host['cpu_model']}), {host['memory_gb']} GB, Linux {host['kernel']}, "
        f"Python {host['python']}. {commit}. "
        f"Layout: {layout_text}. Gateway workers: {meta['options']['workers']}.", "",
        # A --profile-only, --instructions, --parts or --shapes run has no saturation or fixed-rate runs.
        load if results.get("profiles") else whole_run,
        "", *_pipeline_line(meta.get("pipeline")),
    ]
    if results.get("profiles"):  # not in a --profile-only, --instructions, --parts or --shapes run
        lines += ["## Targets", "", *targets_table(results)]
    for profile, data in results.get("profiles", {}).items():
        lines += [f"## {PROFILE_TITLES[profile].capitalize()}", ""]
        for mode, cell in data.get("modes", {}).items():
            if not cell.get("saturation"):
                continue
            lines += [f"### {MODE_TITLES[mode]}", "", *mode_table(data, mode, cell)]
            if cell.get("paired", {}).get("cpu_ratio"):
                lines += [f"Paired with the pass-through (both loaded at once on the same core, "
                          f"{cell['paired']['connections']} connections each): {_paired_text(cell['paired'])}.", ""]
            if mode == "stream" and cell.get("per_event"):
                events = next(iter(cell["per_event"].values()))
                lines += [f"Events per stream: {events['events_short']} (short reply), {events['events_long']} "
                          "(long reply, used for the per-event cost).", ""]
            lines += sweep_table(data, cell)
            if out is not None and (out / f"latency-{profile}-{mode}.png").exists():
                lines += [f"![latency against offered load](latency-{profile}-{mode}.png)", ""]
    if results.get("streams"):
        lines += ["## Concurrent open streams", "", *streams_section(results)]
    if results.get("scaling"):
        lines += ["## Worker scaling", "", *scaling_section(results)]
    lite = litellm_section(results)
    if lite:
        lines += ["## LiteLLM proxy", "", *lite]
    timed = parts_section(results)
    if timed:
        lines += ["## CPU time part by part (paired with the pass-through)", "", *timed]
    shaped = shapes_section(results)
    if shaped:
        lines += ["## Request shapes of real clients (paired with the pass-through)", "", *shaped]
    counted = instructions_section(results)
    if counted:
        lines += ["## Instructions per request (callgrind)", "", *counted]
    prof = profile_section(results)
    if prof:
        lines += ["## Where the gateway spends its CPU (py-spy)", "", *prof]
    if results.get("profiles"):
        lines += ["## Load generator", "", *generator_table(results)]
    if results.get("skipped"):
        lines += ["## Skipped", "", *[f"- {s['what']}: {s['why'].splitlines()[0]}" for s in results["skipped"]], ""]
    return "\n".join(lines).rstrip()


def _pipeline_line(pipeline: dict[str, Any] | None) -> list[str]:
    """What the gateway rows ran besides translation (issue 6's "full pipeline")."""
    if not pipeline:
        return []
    exported = pipeline.get("otlp_exports")
    sink = f", {exported['exports']:,} exports ({exported['bytes']:,} bytes) received" if exported else ""
    return [f"Gateway pipeline: key and team rate limits and budgets in {pipeline['limits_store']}, usage records, "
            f"Prometheus metrics, tracing with {pipeline['trace_sample_ratio']:.0%} of traces sampled and exported "
            f"over OTLP/HTTP to a loopback sink{sink}.", ""]

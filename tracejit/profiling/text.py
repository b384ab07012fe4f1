"""The profiler's text: one report as a list of facts, a session as a table."""

from __future__ import annotations


def duration(seconds) -> str:
    """12.3 µs, 4.5 ms, 1.93 s; '-' when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def micros(us) -> str:
    return "-" if us is None else duration(us * 1e-6)


def count(n) -> str:
    return "-" if n is None else f"{n:,}"


def times(x) -> str:
    return "-" if x is None else f"{x:.3g}x"


def _ir_text(ir: dict) -> str:
    return ", ".join(f"{part} {before} -> {after}" for part, (before, after) in ir.items())


def _compile_lines(report) -> list[tuple[str, str]]:
    if report.error:
        return [("compile", f"failed: {report.error}")]
    loads = report._loads()
    if not loads:
        return [("compile", report.source)]
    thread = loads[0].thread[2]
    where = "" if thread == "MainThread" else f", on thread {thread!r}"
    if loads[0].worker_seconds is not None:
        where = ", in the compile worker process, then loaded from disk"
    source_lines, helpers = report.generated
    lines = [("code generation", f"{duration(report.codegen_s)} ({source_lines} lines, "
                                 f"{helpers} shared nest modules)"),
             ("compile", f"{duration(report.compile_s)} ({report.source}{where}; code "
                         "generation included)")]
    lines += [(f"  {name}", duration(seconds)) for name, seconds in report.phases.items()]
    return lines


def report_text(report) -> str:
    """A report as lines of `label  value`."""
    d = report.as_dict()
    rows = [("signature", report.signature or "-"),
            ("why traced", d["reason"] or "traced before profiling"),
            ("trace", duration(report.trace_s)),
            ("passes", duration(report.passes_s)),
            ("IR equations", _ir_text(report.ir_eqns) or "-")]
    rows += _compile_lines(report)
    rows += [
        ("first result", f"{duration(report.first_call_s)} after the trace began"),
        ("kernel ready", f"{duration(report.kernel_ready_s)} after the trace began"),
        ("calls", f"{count(report.interpreted_calls)} interpreted "
                  f"({duration(report.interpreted_s)}), {count(report.kernel_calls)} by the "
                  f"kernel ({duration(report.kernel_s)})"),
        ("per call", f"{micros(report.call_us)} median, IQR {micros(report.call_iqr_us)} "
                     f"({report.call_measured})"),
        ("  bare kernel", micros(report.bare_us)),
        ("  Python overhead", micros(report.overhead_us)),
        ("eager", f"{micros(report.eager_us)} (the NumPy interpreter of the same program)"),
    ]
    if report.python_us is not None:
        rows.append(("plain NumPy", f"{micros(report.python_us)} (your function, untraced)"))
    rows += [("speedup", f"{times(report.speedup)} over eager"),
             ("break-even", f"{count(report.break_even_calls)} calls"
              + ("" if report.break_even_calls is not None or report.eager_us is None
                 else " (never: the kernel is not faster than eager)"))]
    width = max(len(label) for label, _ in rows)
    head = f"tracejit profile: {report.name} ({report.kind})"
    return "\n".join([head] + [f"  {label:<{width}}  {value}" for label, value in rows])


HEADER = ("function", "signature", "calls interp/kernel", "total", "trace", "compile (source)",
          "per call", "eager", "speedup", "break-even")
LEGEND = (
    "trace: tracing and passes; per call: median of the calls by the kernel; eager: the NumPy\n"
    "interpreter of the same program; break-even: calls until trace, passes and compile are\n"
    "repaid by (eager - per call). A row serves every size with its dtypes, ranks and size-1\n"
    "axes (kernels are shape-generic).")


def _row(report) -> list[str]:
    signature = report.signature
    if len(signature) > 32:
        signature = signature[:31] + "…"
    return [report.name, signature,
            f"{report.interpreted_calls:,}/{report.kernel_calls:,}",
            duration(report.total_s), duration(report.trace_s + report.passes_s),
            f"{duration(report.compile_s)} ({report.source})",
            micros(report.call_us), micros(report.eager_us), times(report.speedup),
            count(report.break_even_calls)]


def columns(header, rows, numeric_from: int = 2) -> str:
    """Plain-text table, columns from `numeric_from` on right-aligned."""
    widths = [max(len(str(row[k])) for row in [header, *rows]) for k in range(len(header))]

    def line(row):
        return "  ".join(str(cell).rjust(w) if k >= numeric_from else str(cell).ljust(w)
                         for k, (cell, w) in enumerate(zip(row, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *[line(row) for row in rows]])


def profiler_text(prof) -> str:
    reports = prof.reports
    if not reports:
        return "tracejit profile: no tracejit function was called"
    table = columns(HEADER, [_row(r) for r in reports])
    overhead = prof.as_dict()["profiler_overhead_us"]
    notes = [f"tracejit profile, {len(reports)} function signature(s); the profiler adds "
             f"~{micros(overhead)} per kernel call (not in 'per call')", table, LEGEND]
    failures = [f"{r.name}: compile failed: {r.error}" for r in reports if r.error]
    return "\n".join(notes + failures)

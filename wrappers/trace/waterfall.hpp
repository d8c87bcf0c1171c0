// wrappers/trace — terminal views of spans: the waterfall of a trace (a tree of spans with
// their offsets, durations and bars placed on a common time axis), the console exporter's
// one-line form, and reading the file exporter's OTLP JSON lines back (`micro trace FILE`).
#pragma once

#include <istream>
#include <span>
#include <string>
#include <vector>

#include "span_data.hpp"

namespace micro::trace::sdk {

// One block per trace (traces ordered by their first start): a header line, then one row
// per span, children indented under their parent and ordered by start. A span whose parent
// is not among `spans` is shown as a root. `width` is the whole line's width in columns.
//
//   trace 0af7651916cd43dd8448eb211c80319c  3 spans  10.000ms
//   Greeter.Hello (server)       0.000ms   10.000ms  |##############################|
//     Database.Insert             2.000ms    5.000ms  |      ###############         |
std::string render_waterfall(std::span<const SpanData> spans, int width = 100);

// "2024-01-02T03:04:05.678901Z trace=… span=… parent=…|- kind=server name="…"
// duration=1.234ms status=error("…") key=value …"
std::string format_console_line(const SpanData& span);

// Every span in a file of OTLP JSON ExportTraceServiceRequest lines (blank lines skipped).
// Throws micro::Exception (400) naming the line that is malformed.
std::vector<SpanData> read_span_lines(std::istream& input);

}  // namespace micro::trace::sdk

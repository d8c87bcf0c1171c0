// wrappers/trace — the five wrappers, written against the tracing API (<micro/trace.hpp>)
// only: server span per handled request, client span per logical call with a child per
// attempt, producer span per publish, consumer span per delivery.
#pragma once

#include <micro/wrapper.hpp>

namespace micro::trace::sdk {

WrapperSet make_trace_wrappers(const WrapperScope& scope);

}  // namespace micro::trace::sdk

// oneDNN 2-D convolutions for XLA's CPU backend, called through the XLA FFI.
//
// XLA's CPU backend runs convolutions on Eigen kernels that are 2-3x slower than oneDNN's on
// CPUs with AVX-512 (ResNet-32, batch 64: BENCHMARKS.md). These handlers run the forward pass,
// the input gradient and the filter gradient of an NHWC x HWIO -> NHWC float32 convolution with
// symmetric zero padding, the only convolution fbl-jax's models use. Activations stay NHWC
// (oneDNN's channels-last kernels); the filter is reordered to the layout the chosen kernel wants
// on every call (it is small). Primitives are built once per shape and kept.
//
// Every buffer's shape is checked against the shapes the plan computes before oneDNN touches it
// (a mismatch is an FFI error naming the shapes, never a read or write past XLA's buffers), and
// every C++ exception becomes an FFI error: nothing escapes into XLA.
//
// Threads: XLA runs each device's program (pmap) on its own thread. Plans are immutable once
// built and shared; only the map that holds them is locked. Each call has its own memory
// objects and uses its thread's own filter and scratchpad buffers (oneDNN's user scratchpad
// mode is thread-safe when no two executions share a buffer), so calls run concurrently.
//
// Built on first use by fbl_jax/models/onednn_conv.py (see there for the Python side).

#include <algorithm>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

enum Kind : int { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// kind; n, h, w, c (input); kh, kw, o (filter); stride, pad
using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t>;

// What a shape's kernels need; never changed after it is built, so threads share it.
struct Plan {
  dnnl::primitive conv;
  memory::desc src, dst;        // NHWC activations (or their gradients)
  memory::desc weights_user;    // HWIO as XLA holds it
  memory::desc weights_kernel;  // what the kernel reads or writes
  memory::desc scratchpad, reorder_scratchpad;
  bool reorder = false;
  dnnl::reorder to_kernel;      // HWIO -> kernel layout (forward, input gradient)
  dnnl::reorder from_kernel;    // kernel layout -> HWIO (filter gradient)
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::unique_ptr<Plan> MakePlan(const Key& key) {
  auto [kind, n, h, w, c, kh, kw, o, stride, pad] = key;
  const int64_t oh = (h + 2 * pad - kh) / stride + 1;
  const int64_t ow = (w + 2 * pad - kw) / stride + 1;
  auto& eng = Engine();
  auto plan = std::make_unique<Plan>();
  plan->src = memory::desc({n, c, h, w}, dt::f32, tag::nhwc);
  plan->dst = memory::desc({n, o, oh, ow}, dt::f32, tag::nhwc);
  plan->weights_user = memory::desc({o, c, kh, kw}, dt::f32, tag::hwio);
  memory::desc wei_any({o, c, kh, kw}, dt::f32, tag::any);
  memory::dims strides = {stride, stride}, padding = {pad, pad};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(eng, dnnl::prop_kind::forward_training, algo,
                                                plan->src, wei_any, plan->dst, strides,
                                                padding, padding, attr);
  if (kind == kForward) {
    plan->conv = dnnl::convolution_forward(fwd);
    plan->weights_kernel = fwd.weights_desc();
    plan->scratchpad = fwd.scratchpad_desc();
  } else if (kind == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc bwd(eng, algo, plan->src, wei_any,
                                                        plan->dst, strides, padding, padding,
                                                        fwd, attr);
    plan->conv = dnnl::convolution_backward_data(bwd);
    plan->weights_kernel = bwd.weights_desc();
    plan->scratchpad = bwd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(eng, algo, plan->src, wei_any,
                                                           plan->dst, strides, padding,
                                                           padding, fwd, attr);
    plan->conv = dnnl::convolution_backward_weights(bwd);
    plan->weights_kernel = bwd.diff_weights_desc();
    plan->scratchpad = bwd.scratchpad_desc();
  }
  plan->reorder = plan->weights_kernel != plan->weights_user;
  if (plan->reorder) {
    const bool out = kind == kBackwardWeights;
    const auto& from = out ? plan->weights_kernel : plan->weights_user;
    const auto& to = out ? plan->weights_user : plan->weights_kernel;
    dnnl::reorder::primitive_desc pd(eng, from, eng, to, attr);
    (out ? plan->from_kernel : plan->to_kernel) = dnnl::reorder(pd);
    plan->reorder_scratchpad = pd.scratchpad_desc();
  }
  return plan;
}

// The plan for `key`, built on first use. Only the map is locked: a plan, once in it, is never
// changed or freed, so the reference stays valid while other threads add theirs.
const Plan& GetPlan(const Key& key) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> guard(mutex);
  auto found = plans.find(key);
  if (found != plans.end()) return *found->second;
  auto plan = MakePlan(key);
  return *(plans[key] = std::move(plan));
}

std::string Shape(ffi::Span<const int64_t> dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// Checks the three buffers against each other before any pointer reaches oneDNN: `x` NHWC
// (n, h, w, c), `w` HWIO (kh, kw, c, o), `y` NHWC (n, oh, ow, o) with the output size the
// stride and padding give. An empty string means they agree.
std::string CheckShapes(Kind kind, ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                        ffi::Span<const int64_t> y, int64_t stride, int64_t pad) {
  static const char* names[3][3] = {{"input", "filter", "output"},
                                    {"input gradient", "filter", "output gradient"},
                                    {"input", "filter gradient", "output gradient"}};
  const char* const* name = names[kind];
  const std::string shapes = std::string(" (") + name[0] + " " + Shape(x) + ", " + name[1] +
                             " " + Shape(w) + ", " + name[2] + " " + Shape(y) + ", stride " +
                             std::to_string(stride) + ", padding " + std::to_string(pad) + ")";
  if (x.size() != 4 || w.size() != 4 || y.size() != 4) {
    return "expects NHWC activations and an HWIO filter" + shapes;
  }
  for (auto dims : {x, w, y}) {
    for (int64_t d : dims) {
      if (d < 0) return "negative dimension" + shapes;
    }
  }
  if (stride < 1 || pad < 0 || stride > INT32_MAX || pad > INT32_MAX) {
    return "expects 1 <= stride < 2^31 and 0 <= padding < 2^31" + shapes;
  }
  if (w[2] != x[3]) {
    return std::string(name[0]) + " feature dimension size must equal the " + name[1] +
           " input feature dimension size, but " + std::to_string(x[3]) + " != " +
           std::to_string(w[2]) + shapes;
  }
  const int64_t rows = x[1] + 2 * pad - w[0], cols = x[2] + 2 * pad - w[1];
  if (rows < 0 || cols < 0) return "filter larger than the padded input" + shapes;
  const int64_t want[4] = {x[0], rows / stride + 1, cols / stride + 1, w[3]};
  for (int i = 0; i < 4; ++i) {
    if (y[i] != want[i]) {
      return std::string(name[2]) + " shape must be (" + std::to_string(want[0]) + ", " +
             std::to_string(want[1]) + ", " + std::to_string(want[2]) + ", " +
             std::to_string(want[3]) + ")" + shapes;
    }
  }
  return "";
}

// A buffer of this thread's, at least `size` bytes; grows, never shrinks (one per role).
char* ThreadBuffer(std::vector<char>& buffer, size_t size) {
  if (buffer.size() < size + 1) buffer.resize(size + 1);
  return buffer.data();
}

// Runs one convolution. `x` is the NHWC input (forward, filter gradient) or the input gradient
// (input gradient), `y` the NHWC output or output gradient, `weights` the HWIO filter or its
// gradient (filter gradient).
ffi::Error Run(Kind kind, ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> w_dims,
               ffi::Span<const int64_t> y_dims, float* x, float* weights, float* y,
               int64_t stride, int64_t pad) {
  try {
    std::string problem = CheckShapes(kind, x_dims, w_dims, y_dims, stride, pad);
    if (!problem.empty()) return ffi::Error::InvalidArgument("oneDNN conv: " + problem);
    Key key{kind,      x_dims[0], x_dims[1], x_dims[2], x_dims[3],
            w_dims[0], w_dims[1], w_dims[3], stride,    pad};
    const Plan& plan = GetPlan(key);
    auto& eng = Engine();
    static thread_local dnnl::stream stream(eng);
    static thread_local std::vector<char> weight_buffer, scratch_buffer;
    memory src(plan.src, eng, x), dst(plan.dst, eng, y);
    memory wei_user(plan.weights_user, eng, weights), wei = wei_user;
    if (plan.reorder) {
      wei = memory(plan.weights_kernel, eng,
                   ThreadBuffer(weight_buffer, plan.weights_kernel.get_size()));
    }
    // the reorder and the convolution run one after the other: one scratchpad buffer for both
    char* scratch = ThreadBuffer(scratch_buffer, std::max(plan.scratchpad.get_size(),
                                                          plan.reorder_scratchpad.get_size()));
    memory conv_scratch(plan.scratchpad, eng, scratch), reorder_scratch;
    if (plan.reorder) reorder_scratch = memory(plan.reorder_scratchpad, eng, scratch);
    auto reorder = [&](const dnnl::reorder& r, memory& from, memory& to) {
      r.execute(stream, {{DNNL_ARG_FROM, from},
                         {DNNL_ARG_TO, to},
                         {DNNL_ARG_SCRATCHPAD, reorder_scratch}});
    };
    if (kind == kForward) {
      if (plan.reorder) reorder(plan.to_kernel, wei_user, wei);
      plan.conv.execute(stream, {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_WEIGHTS, wei},
                                 {DNNL_ARG_DST, dst},
                                 {DNNL_ARG_SCRATCHPAD, conv_scratch}});
    } else if (kind == kBackwardData) {
      if (plan.reorder) reorder(plan.to_kernel, wei_user, wei);
      plan.conv.execute(stream, {{DNNL_ARG_DIFF_DST, dst},
                                 {DNNL_ARG_WEIGHTS, wei},
                                 {DNNL_ARG_DIFF_SRC, src},
                                 {DNNL_ARG_SCRATCHPAD, conv_scratch}});
    } else {
      plan.conv.execute(stream, {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_DIFF_DST, dst},
                                 {DNNL_ARG_DIFF_WEIGHTS, wei},
                                 {DNNL_ARG_SCRATCHPAD, conv_scratch}});
      if (plan.reorder) reorder(plan.from_kernel, wei, wei_user);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN conv: ") + e.what());
  } catch (const std::exception& e) {  // std::bad_alloc from a buffer or the plan map, ...
    return ffi::Error::Internal(std::string("oneDNN conv: C++ exception: ") + e.what());
  } catch (...) {
    return ffi::Error::Internal("oneDNN conv: unknown C++ exception");
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pad) {
  return Run(kForward, x.dimensions(), w.dimensions(), y->dimensions(), x.typed_data(),
             w.typed_data(), y->typed_data(), stride, pad);
}

// dy: output gradient; dx: the input gradient (its shape is the forward input's)
ffi::Error BackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                        ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t pad) {
  return Run(kBackwardData, dx->dimensions(), w.dimensions(), dy.dimensions(),
             dx->typed_data(), w.typed_data(), dy.typed_data(), stride, pad);
}

ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                           ffi::ResultBuffer<ffi::F32> dw, int64_t stride, int64_t pad) {
  return Run(kBackwardWeights, x.dimensions(), dw->dimensions(), dy.dimensions(),
             x.typed_data(), dw->typed_data(), dy.typed_data(), stride, pad);
}

}  // namespace

// All three take two float32 buffers, return one, and read the stride and padding.
#define FBL_CONV_BINDING                  \
  ffi::Ffi::Bind()                        \
      .Arg<ffi::Buffer<ffi::F32>>()       \
      .Arg<ffi::Buffer<ffi::F32>>()       \
      .Ret<ffi::Buffer<ffi::F32>>()       \
      .Attr<int64_t>("stride")            \
      .Attr<int64_t>("pad")

XLA_FFI_DEFINE_HANDLER_SYMBOL(FblOnednnConvForward, Forward, FBL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FblOnednnConvBackwardData, BackwardData, FBL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FblOnednnConvBackwardWeights, BackwardWeights, FBL_CONV_BINDING);
